"""The `Vault` contract (interlock/guardrails/vault.py), through the interface only: a placeholder
issued and committed by one call is restored for the session's next calls, the same value keeps its
placeholder, sessions never see each other's values, and a session's table is bounded. Runs
against every backend in conftest.VAULT_BACKENDS."""

from __future__ import annotations

import asyncio

from interlock.guardrails.vault import Vault, VaultConflict


async def test_a_committed_placeholder_round_trips(vault: Vault) -> None:
    table = await vault.open("s1", create=True)
    assert table is not None
    placeholder = table.placeholder("EMAIL_ADDRESS", "ada@example.com")
    assert placeholder == "<EMAIL_ADDRESS_1>"
    await vault.commit("s1", table)
    later = await vault.open("s1", create=False)
    assert later is not None
    assert later.value(placeholder) == "ada@example.com"
    assert later.placeholder("EMAIL_ADDRESS", "ada@example.com") == placeholder  # same value, same placeholder
    assert later.placeholder("EMAIL_ADDRESS", "bob@example.com") == "<EMAIL_ADDRESS_2>"  # numbering goes on
    assert later.value("<EMAIL_ADDRESS_9>") is None


async def test_sessions_are_isolated(vault: Vault) -> None:
    mine = await vault.open("s1", create=True)
    assert mine is not None
    placeholder = mine.placeholder("PERSON", "Ada Lovelace")
    await vault.commit("s1", mine)
    other = await vault.open("s2", create=True)
    assert other is not None
    assert other.value(placeholder) is None
    assert other.placeholder("PERSON", "Grace Hopper") == placeholder  # numbered per session
    await vault.commit("s2", other)
    again = await vault.open("s1", create=False)
    assert again is not None and again.value(placeholder) == "Ada Lovelace"


async def test_an_unknown_session_is_not_created_by_a_lookup(vault: Vault) -> None:
    assert await vault.open("nobody", create=False) is None
    assert await vault.open("nobody", create=False) is None
    created = await vault.open("nobody", create=True)
    assert created is not None and len(created) == 0


async def test_a_sessions_table_is_bounded(small_vault: Vault) -> None:
    table = await small_vault.open("s1", create=True)
    assert table is not None
    for value in ("a", "b", "c"):
        table.placeholder("X", value)
    await small_vault.commit("s1", table)
    later = await small_vault.open("s1", create=False)
    assert later is not None
    assert len(later) == 2 and later.value("<X_1>") is None and later.value("<X_3>") == "c"


async def test_concurrent_calls_of_a_session_agree(vault_pair: tuple[Vault, Vault]) -> None:
    async def one_call(i: int) -> tuple[str, str]:
        value = f"user{i % 5}@example.com"
        vault = vault_pair[i % 2]  # calls split across two replicas
        table = await vault.open("shared", create=True, reserve=[("EMAIL_ADDRESS", value)])
        assert table is not None
        placeholder = table.placeholder("EMAIL_ADDRESS", value)  # the reserved one: nothing new issued here
        await vault.commit("shared", table)
        return value, placeholder

    results = await asyncio.gather(*(one_call(i) for i in range(20)))
    for vault in vault_pair:
        table = await vault.open("shared", create=False)
        assert table is not None
        for value, placeholder in results:
            assert table.value(placeholder) == value  # every placeholder a call used is restorable
    assert len({p for _, p in results}) == 5


async def test_a_placeholder_never_means_two_values(vault_pair: tuple[Vault, Vault]) -> None:
    first, second = vault_pair
    mine = await first.open("s1", create=True)
    theirs = await second.open("s1", create=True)
    assert mine is not None and theirs is not None
    used = [(mine, first, mine.placeholder("PERSON", "Ada")), (theirs, second, theirs.placeholder("PERSON", "Grace"))]
    committed = []
    for table, vault, placeholder in used:
        try:
            await vault.commit("s1", table)
        except VaultConflict:
            continue  # the later of two replicas that issued one number locally: refused, not remapped
        committed.append(placeholder)
    assert committed  # the first commit wins
    later = await second.open("s1", create=False)
    assert later is not None
    values = {later.value(p) for p in committed}
    assert len(values) == len(committed) and None not in values

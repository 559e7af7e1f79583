"""The scripted provider: the one stand-in for real providers in tests, `bench/` and `interlock demo`.

`upstream.py` serves it (`ScriptedUpstream`) and answers the OpenAI and Anthropic formats;
`openai_replies.py` and `anthropic_replies.py` build their answers from `replies.py`'s `Script` and
parts (request reading, errors, SSE framing); every other provider's format is a module here that
registers itself (`wire.register`): `azure.py`, `bedrock.py`, `gemini.py`. Importing the package
imports each module in it, so a new provider's `<name>.py` here is all the scripted provider needs.
"""

from __future__ import annotations

import importlib
import pkgutil

from interlock.scripted.replies import Script, ToolUse
from interlock.scripted.upstream import Encoder, ScriptedUpstream
from interlock.scripted.wire import Received

# Each format module registers itself on import (wire.FORMATS); alphabetical, so the order is stable.
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda found: found.name):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Encoder", "Received", "Script", "ScriptedUpstream", "ToolUse"]

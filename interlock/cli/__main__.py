"""`python -m interlock.cli ...`: the same command as the `interlock` console script (tests and bench run it so)."""

from interlock.cli import main

main()

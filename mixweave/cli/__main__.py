"""``python -m mixweave.cli ...`` (what the tests and spark-submit's entry file run)."""

from . import console_main

console_main()

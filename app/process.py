"""Child-process hygiene for the app shell: tokenmeter/child_process.py (in the contract, as a stage's own
command starts children too)."""

from tokenmeter.child_process import child_preexec  # noqa: F401 - the app's modules import it from here

"""Running a suite, in three subpackages: suite/ (the language), execution/ (trials, executors, store), tuning/.

Layers inside run/, bottom to top: suite, execution, tuning; a subpackage imports only its own
layer or those below it (tests/test_layout.py).

Nothing is re-exported here: the executors import the trial stack (torch) only when a trial runs,
so importing a module of this package stays light.
"""

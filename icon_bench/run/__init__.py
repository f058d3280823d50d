"""Running a suite: the suite file, trial ids, one trial into one row, the executors, and the results store.

Nothing is re-exported here: the executors import the trial stack (torch) only when a trial runs,
so importing a module of this package stays light.
"""

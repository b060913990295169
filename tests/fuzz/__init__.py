"""Bad input: fuzz the CLI's arguments and config files (hypothesis).

Malformed YAML and JSON (truncated, mistyped, tabs, duplicate and non-string keys, tags
like ``!!python/object``, anchors, BOMs, several documents), wrong types in every field
of a queue config and a launch spec, huge values (10**400, 5000-digit numbers, 1e308,
NaN, nesting up to 5000 deep, 100 KB arguments), unicode and non-UTF-8 bytes, empty files,
directories, links and missing paths, given to ``queue create/edit --config``, ``launch
-q Q`` (with ``-c``, ``-R``, ``--set``, ``--set-var``, ``-P`` and the other flags),
``queue template set`` (flags and ``--file``), ``job create code``, ``runs list/show/
cancel``, ``job show``, ``queue render``, ``queue template unset``, and random arguments
to every command that neither runs nor waits. The property, for every input:

- the exit status is 0, 1 or 2, and no exception escapes ``main()``;
- a non-zero exit prints exactly one line on stderr, ``launchctl: error: ...``: exit 2
  when the command line could not be read (Click refused it, or an argument is not
  UTF-8), exit 1 when launchctl refused what it asked; only a group given no command
  prints its help instead (exit 2); never a traceback and never ``internal error``;
- a non-zero exit writes nothing: every table's rows (content, not only counts), the files
  under ``$LAUNCHCTL_HOME`` and the secrets file are as they were;
- a zero exit writes something sane: the store's JSON is strict (no NaN) and valid text
  (no lone surrogates), and what the command reports (the queue's config as given, the
  queued run with its --set keys, the job, the definition, the run an id prefix names)
  is really there.

A subprocess costs ~0.2 s, so ``main()`` runs in-process (``run_cli``), in a fresh thread
(so deep-nesting inputs meet the same recursion depth as in a real process), with stdout
and stderr as a real process has them: UTF-8, strict on stdout and backslashreplace on
stderr. ``test_in_process_runner_matches_a_real_process`` checks that shortcut against
real subprocesses. Only commands that start no agent and no run are fuzzed: every
``launch`` here has a non-empty ``--queue`` and no ``--wait``. Every input the fuzz found
to break the property is kept in ``FOUND`` as a named regression test.

The layout:

- ``harness.py``: the in-process runner, ``check`` (the property), the success checks;
- ``conftest.py``: the ``seed`` fixture, the store every test runs against;
- ``strategies.py``: the hypothesis strategies (argv text, documents, config files);
- ``regressions.py``: ``FOUND``, the inputs the fuzz found, each named;
- ``test_*.py``: the tests by subject (queues, launch, jobs, runs, any argv), the found
  inputs (``test_regressions.py``) and the runner against a real process
  (``test_harness.py``).
"""

"""Sweeps on queues (issue 15): W&B sweep configs, the scheduler, search through a library."""

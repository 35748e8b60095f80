"""The run store and what writes to it: SQLite store, recording, the job queue, estimates, TensorBoard files."""

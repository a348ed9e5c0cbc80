"""The commands a user types and what they show: `hklflow` itself (cli), `run` and `demo`, `init`, the run console, the rows set aside."""

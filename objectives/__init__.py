"""Ready objective plugins; installed as ``autopeft.objective_plugins`` and registered by entry point
(``--objective macro_f1``), the way any package publishes its own."""

"""One trial: a configuration bound to the model (the space with its parameter counts), built
as a PEFT model, trained through its strategy's stages, evaluated and saved; adapters loaded
back; why a trial failed."""

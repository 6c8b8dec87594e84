"""Task types (what is fine-tuned and how it is scored) and their data."""

from autopeft.tasks.base import (Evaluation, Metric, ModelOptions, Task, TaskData, make_task,
                                 register_task)
from autopeft.tasks.causal_lm import CausalLM
from autopeft.tasks.classification import SequenceClassification
from autopeft.tasks.data import DataSource
from autopeft.tasks.demo import Demo, DemoLM, demo_model_path, load_demo_data

__all__ = ["CausalLM", "DataSource", "Demo", "DemoLM", "Evaluation", "Metric", "ModelOptions",
           "SequenceClassification", "Task", "TaskData", "demo_model_path", "load_demo_data", "make_task",
           "register_task"]

"""Task types (what is fine-tuned and how it is scored) and their data."""

from autopeft.tasks.base import Evaluation, Task, TaskData, make_task, register_task
from autopeft.tasks.classification import SequenceClassification
from autopeft.tasks.data import DataSource
from autopeft.tasks.demo import demo_model_path, load_demo_data

__all__ = ["DataSource", "Evaluation", "SequenceClassification", "Task", "TaskData",
           "demo_model_path", "load_demo_data", "make_task", "register_task"]

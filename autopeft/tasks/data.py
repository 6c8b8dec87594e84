"""Loading a user's tables (CSV, TSV, JSON/JSONL, Parquet, or a `datasets` folder) and
splitting them into train/dev/test with a seed, stratified, without duplicates across splits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from autopeft.config import DataConfig
from autopeft.errors import DataError

_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class DataSource:
    """Where a task's examples come from and which columns hold what."""

    train_file: str | None = None
    dev_file: str | None = None
    test_file: str | None = None
    #: role (``text``, ``text_pair``, ``label``, ``prompt``, ``response``) -> column name in
    #: the files (None: not given)
    columns: dict[str, str | None] = field(default_factory=dict)
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    #: causal LM: format prompt/response pairs with the tokenizer's chat template
    chat_template: bool = False

    def files(self) -> list[tuple[str, str]]:
        """(split, path) of each file given."""
        return [(role, path) for role, path in (("train", self.train_file), ("dev", self.dev_file),
                                                ("test", self.test_file)) if path]



def data_source(config: DataConfig) -> DataSource:
    """Where the user's data is and which column plays which role (``text_column`` -> ``text``)."""
    roles = {f.name.removesuffix("_column"): getattr(config, f.name) for f in dataclasses.fields(config)
             if f.name.endswith("_column")}
    return DataSource(config.train_file, config.dev_file, config.test_file, roles,
                      chat_template=bool(config.chat_template))

def load_tables(source: DataSource, task: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
                ) -> tuple[dict[str, Dataset], list[str], dict[str, str], str]:
    """The user's splits with their columns renamed to roles (rows with an empty one dropped):
    (split -> table, notes on what was dropped, role -> column, a description of the files)."""
    if not source.train_file:
        raise DataError(f"a {task} task needs --train-file (or use a demo task)")
    columns = {role: col for role, col in source.columns.items() if col}
    for role in required:
        if role not in columns:
            raise DataError(f"--{role.replace('_', '-')}-column is required for a {task} task")
    for role in columns:
        if role not in (*required, *optional):
            raise DataError(f"--{role.replace('_', '-')}-column does not apply to a {task} task; it reads "
                            f"{', '.join(f'--{r}-column' for r in (*required, *optional))}")
    splits, notes = {}, []
    for role, path in source.files():
        raw = load_table(path, role)
        table = select_columns(raw, columns, path)
        if len(table) < len(raw):
            notes.append(f"{len(raw) - len(table)} {role} rows of {path} dropped: "
                         f"{' or '.join(columns[r] for r in columns)} empty")
        splits[role] = table
    files = ", ".join(f"{role} {path}" for role, path in source.files())
    return splits, notes, columns, files


def load_table(path: str, role: str = "train") -> Dataset:
    """One split from a file or a ``datasets`` folder (``save_to_disk``); a DatasetDict folder
    gives its split named ``role`` (``dev`` also finds ``validation``)."""
    p = Path(path)
    if not p.exists():
        raise DataError("data file not found", source=path)
    if p.is_dir():
        try:
            loaded = load_from_disk(str(p))
        except Exception as err:  # datasets raises several types for a folder it cannot read
            raise DataError(f"not a `datasets` folder ({type(err).__name__}: {err})", source=path) from None
        if isinstance(loaded, DatasetDict):
            names = {"train": ["train"], "dev": ["validation", "dev"], "test": ["test"]}[role]
            for name in names:
                if name in loaded:
                    return loaded[name]
            raise DataError(f"folder has splits {list(loaded)}, none named {names}", source=path)
        return loaded
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DataError(f"unsupported file type '{p.suffix}'; use one of {sorted(_FORMATS)} "
                        f"or a `datasets` folder", source=path)
    kwargs = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}
    try:
        return load_dataset(fmt, data_files=str(p), split="train", **kwargs)
    except Exception as err:  # parse errors come from pandas/pyarrow with many types
        raise DataError(f"cannot read as {fmt}: {str(err).splitlines()[0]}", source=path) from None


def select_columns(table: Dataset, columns: dict[str, str], source: str) -> Dataset:
    """Keep and rename the columns named in ``columns`` (role -> column); drop rows with nulls."""
    if len(table) == 0:
        raise DataError("dataset is empty", source=source)
    for role, column in columns.items():
        if column not in table.column_names:
            raise DataError(f"{role} column '{column}' not found; columns are {table.column_names}",
                            source=source)
    table = table.select_columns(list(columns.values()))
    table = table.rename_columns({c: r for r, c in columns.items() if c != r})
    table = table.filter(lambda row: all(row[r] is not None and str(row[r]).strip() != ""
                                         for r in columns))
    if len(table) == 0:
        raise DataError("no rows with all of the columns "
                        f"{list(columns.values())} filled", source=source)
    return table


def column_values(table: Dataset, name: str) -> list:
    """A column as a list, read in one go: ``table[name]`` reads a row at a time once the table
    has been selected from (about 0.1 ms a row, seconds for a 10k-example dataset)."""
    return table.select_columns([name]).to_pandas()[name].tolist()


def example_keys(table: Dataset, key_columns: list[str]) -> list[tuple]:
    columns = [column_values(table, c) for c in key_columns]
    return [tuple(str(v).strip().lower() for v in row) for row in zip(*columns, strict=True)]


def deduplicate(table: Dataset, key_columns: list[str], exclude: set[tuple] = frozenset()) -> Dataset:
    """``table`` without repeated examples and without those whose key is in ``exclude``."""
    seen = set(exclude)
    keep = []
    for i, key in enumerate(example_keys(table, key_columns)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.select(keep)


def stratified_split(table: Dataset, fraction: float, strata: list, seed: int) -> tuple[Dataset, Dataset]:
    """Split off ``fraction`` of ``table``, the same share of every stratum (label)."""
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    held: list[int] = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        rng.shuffle(members)
        held.extend(members[: int(round(len(members) * fraction))].tolist())
    held_set = set(held)
    rest = [i for i in range(len(table)) if i not in held_set]
    if not held or not rest:
        raise DataError(f"too few examples ({len(table)}) to split off {fraction:.0%}")
    return table.select(sorted(rest)), table.select(sorted(held))


def split_splits(train: Dataset, dev: Dataset | None, test: Dataset | None, source: DataSource,
                 key_columns: list[str], strata_column: str, seed: int
                 ) -> tuple[Dataset, Dataset, Dataset, list[str]]:
    """Fill in missing dev/test splits from train and remove duplicates within and across the
    splits; also returns a note for each removal (how many, and why)."""
    notes: list[str] = []

    def dedup(table: Dataset, name: str, exclude: set[tuple] = frozenset(), why: str = "") -> Dataset:
        kept = deduplicate(table, key_columns, exclude)
        if len(kept) < len(table):
            notes.append(f"{len(table) - len(kept)} {name} examples removed as duplicates{why}")
        return kept

    train = dedup(train, "train")
    if test is None:
        train, test = stratified_split(train, source.test_fraction, column_values(train, strata_column), seed)
    test = dedup(test, "test")
    if dev is None:
        share = source.dev_fraction / (1.0 - (source.test_fraction if source.test_file is None else 0.0))
        train, dev = stratified_split(train, share, column_values(train, strata_column), seed + 1)
    dev = dedup(dev, "dev", set(example_keys(test, key_columns)), " (or of test examples)")
    held_out = set(example_keys(test, key_columns)) | set(example_keys(dev, key_columns))
    train = dedup(train, "train", held_out, " of dev or test examples")
    for name, split in (("train", train), ("dev", dev), ("test", test)):
        if len(split) == 0:
            raise DataError(f"the {name} split is empty after removing duplicates")
    return train, dev, test, notes

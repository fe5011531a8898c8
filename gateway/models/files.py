"""A model file and its declaration: what the policy says the file is, and the
check that the file on disk is exactly that.

The declaration is what owners approve and what other parties see: the file's
sha256, its named inputs with their types, and the one output the gateway reads
with its bounds. The weights never leave this module's callers: analysts see
`score()` values only inside released aggregates.

The file is read once, hashed, and the very bytes hashed are the ones ONNX
Runtime loads (`load`), so a file swapped between the check and the load is
caught, not scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Declared input types, as ONNX Runtime names the tensor types they feed.
INPUT_TYPES = {"float": "tensor(float)", "double": "tensor(double)", "int64": "tensor(int64)"}
OUTPUT_TYPES = frozenset({"tensor(float)", "tensor(double)"})
MAX_FILE_BYTES = 256 * 1024 * 1024  # a model larger than this is refused, not loaded into every executor
FUNCTION_PREFIX = "cleanroom_model_"  # DuckDB functions the executors register; only the resolver writes them
TRAIN_FRONT_END = "train"  # the front end of training runs: only they may run a training template
EXTRA_HINT = "install the models extra: pip install -e '.[models]' (onnxruntime, onnx, scikit-learn, skl2onnx)"


class ModelFileError(Exception):
    """The file is unreadable, is not the declared one, or does not match its declaration.
    `key` is the declaration's key the problem belongs to (file, sha256, inputs, output)."""

    def __init__(self, key: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ModelInput:
    name: str
    type: str  # a key of INPUT_TYPES


@dataclass(frozen=True)
class ModelFile:
    """A declared model file, as executors need it to score."""

    path: str  # absolute
    sha256: str  # of the file's bytes: what owners approve
    inputs: tuple[ModelInput, ...]  # in the order score() takes them
    output: str  # the ONNX output read
    index: int | None  # its column, when the output is a matrix (class probabilities)
    lower: float  # declared bounds: every score is clamped to them
    upper: float

    @property
    def function(self) -> str:
        """The DuckDB function executors register for this declaration. It names the
        declaration's hash, so a changed file, input or bound is a different function,
        and no statement compiled for one version runs on another."""
        identity = [self.sha256, [(i.name, i.type) for i in self.inputs], self.output, self.index,
                    self.lower, self.upper]
        return FUNCTION_PREFIX + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Layout:
    """How score()'s arguments reach the graph: one [n, k] tensor, or one input each."""

    tensor: str | None  # the single matrix input's name, or None: inputs fed by name
    dtype: str  # ONNX type of the (first) input
    output_rank: int


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(model: ModelFile) -> bytes:
    """The file's bytes, checked against the declared sha256."""
    path = Path(model.path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelFileError(("file",), f"the file has {size} bytes (at most {MAX_FILE_BYTES})")
        data = path.read_bytes()
    except OSError as error:
        raise ModelFileError(("file",), f"cannot read the model file: {error.strerror or error}") from None
    digest = file_sha256(data)
    if digest != model.sha256.lower():
        raise ModelFileError(("sha256",), f"the file's sha256 is {digest}, not the declared {model.sha256}")
    return data


def load(model: ModelFile):
    """An ONNX Runtime session over the declared file, and how to feed it. Raises
    ModelFileError for a file that is not the declared one or does not match."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelFileError(("file",), f"models need ONNX Runtime: {EXTRA_HINT}") from None
    data = read(model)
    options = onnxruntime.SessionOptions()
    # one thread per call: DuckDB already runs its threads' chunks side by side
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's own errors: not a model it can run
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ModelFileError(("file",), f"ONNX Runtime cannot load the file: {first}") from None
    return session, layout(model, session)


def layout(model: ModelFile, session) -> Layout:
    """Check the graph's inputs and output against the declaration."""
    inputs = session.get_inputs()
    declared = [i.name for i in model.inputs]
    described = ", ".join(f"{i.name} {i.type} {_shape(i.shape)}" for i in inputs)
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and len(model.inputs) >= 1 and (
            len(model.inputs) > 1 or inputs[0].name not in declared):
        matrix = inputs[0]
        width = matrix.shape[1]
        if isinstance(width, int) and width != len(model.inputs):
            raise ModelFileError(("inputs",), f"the file takes one {width}-column matrix ({described}); "
                                              f"{len(model.inputs)} inputs are declared")
        wrong = sorted(i.name for i in model.inputs if INPUT_TYPES[i.type] != matrix.type)
        if wrong:
            raise ModelFileError(("inputs", wrong[0]), f"the file's matrix input is {matrix.type}; "
                                                       f"declared {', '.join(wrong)} as another type")
        return Layout(matrix.name, matrix.type, _output_rank(model, session))
    by_name = {i.name: i for i in inputs}
    if sorted(by_name) != sorted(declared):
        raise ModelFileError(("inputs",), f"the file's inputs are {described or 'none'}; "
                                          f"declared: {', '.join(declared)}")
    for item in model.inputs:
        graph = by_name[item.name]
        if graph.type != INPUT_TYPES[item.type]:
            raise ModelFileError(("inputs", item.name), f"the file's input {item.name} is {graph.type}, "
                                                        f"not {INPUT_TYPES[item.type]} ({item.type})")
        if len(graph.shape) not in (1, 2) or (len(graph.shape) == 2 and graph.shape[1] not in (1, None)
                                              and not isinstance(graph.shape[1], str)):
            raise ModelFileError(("inputs", item.name), f"the file's input {item.name} has shape "
                                                        f"{_shape(graph.shape)}: one value per row is needed")
    return Layout(None, by_name[declared[0]].type, _output_rank(model, session))


def _output_rank(model: ModelFile, session) -> int:
    outputs = {o.name: o for o in session.get_outputs()}
    found = outputs.get(model.output)
    if found is None:
        listed = ", ".join(f"{o.name} {o.type} {_shape(o.shape)}" for o in outputs.values())
        raise ModelFileError(("output", "name"), f"the file has no output {model.output!r} (it has {listed})")
    if found.type not in OUTPUT_TYPES:
        raise ModelFileError(("output", "name"), f"output {model.output} is {found.type}: a float tensor is needed "
                                                 "(export classifiers without ZipMap)")
    rank = len(found.shape)
    if rank == 1 and model.index is not None:
        raise ModelFileError(("output", "index"), f"output {model.output} has one value per row: declare no index")
    if rank == 2:
        width = found.shape[1]
        if model.index is None:
            raise ModelFileError(("output", "index"), f"output {model.output} has {width} columns per row: "
                                                      "declare which one is the score (index)")
        if isinstance(width, int) and not 0 <= model.index < width:
            raise ModelFileError(("output", "index"), f"output {model.output} has {width} columns: "
                                                      f"index {model.index} is not one of them")
    if rank not in (1, 2):
        raise ModelFileError(("output", "name"), f"output {model.output} has shape {_shape(found.shape)}: "
                                                 "one value (or one row of values) per input row is needed")
    return rank


def _shape(shape) -> str:
    return "[" + ", ".join("n" if not isinstance(d, int) else str(d) for d in shape) + "]"


def check(model: ModelFile) -> ModelFileError | None:
    """The first problem with a declared model file, or None when it is the declared one."""
    try:
        load(model)
    except ModelFileError as problem:
        return problem
    return None

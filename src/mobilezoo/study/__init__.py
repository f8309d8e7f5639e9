"""The seed's CIFAR-10 study end to end (``mobilezoo study``): the eleven networks trained with one recipe (fixed
epochs or a wall-clock budget per model), measured on seven dimensions — top-1/top-5, MACs/FLOPs, params, peak
activation memory, file size fp32/int8, latency on every engine at 32x32 and 224x224, training time — reported
(Markdown, HTML, CSV/JSON, plots) with the seed's conclusions checked one by one; resumable at any point.

```python
from mobilezoo.study import Settings, State, run_study
state = State.create("study", Settings("../shared/data/cifar10", budget_min=8).check(), machine={})
run_study(state)
```

Modules: :mod:`.plan` (settings, ``study.json`` state), :mod:`.training` (the budgeted training driver),
:mod:`.measure` (the measured dimensions), :mod:`.results` and :mod:`.conclusions` (tables, the claims),
:mod:`.report` (the files), :mod:`.runner` (the loop, progress, resume), :mod:`.cli`.
"""

from .plan import STUDY_MODELS, Settings, State, StudyError

__all__ = ["STUDY_MODELS", "Settings", "State", "StudyError", "run_study", "write_report"]


def __getattr__(name: str):  # the heavy parts (torch) only when used
    if name == "run_study":
        from .runner import run_study

        return run_study
    if name == "write_report":
        from .report import write_report

        return write_report
    raise AttributeError(name)

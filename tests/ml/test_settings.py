from __future__ import annotations

import pytest
from pydantic import ValidationError

from ml.settings import Settings
from ml.text import normalize_query


def test_embedded_defaults_need_no_server(tmp_path):
    s = Settings(home=tmp_path)
    assert s.profile == "embedded"
    assert s.tracking_uri.startswith("sqlite:///") and str(tmp_path) in s.tracking_uri
    assert s.home.is_absolute() and not (tmp_path / "raw").exists()  # nothing created on construction


def test_placeholder_secret_refused_in_production(tmp_path):
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(home=tmp_path, profile="production", admin_token="dev-token")
    assert Settings(home=tmp_path, profile="production", admin_token="s3cr3t-value").profile == "production"


def test_unknown_family_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown model family"):
        Settings(home=tmp_path).registered_model("sixth")


@pytest.mark.parametrize("raw,norm", [
    ("  Red   Running SHOES! ", "red running shoe"),
    ("boxes", "box"), ("glass", "glass"), ("Nike-Air 90s", "nike air 90s"), ("Lamps", "lamp"), ("", ""),
])
def test_normalize_query(raw, norm):
    assert normalize_query(raw) == norm

"""The PBX connector from settings: what an integrator sets in TIERLINE_AMI_* reaches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cti_adapter.asterisk import AmiConfig, AmiConnector
from cti_adapter.asterisk.config import DEFAULT_DEVICE_PATTERN
from cti_adapter.factory import connector_from
from cti_adapter.fake import FakePbx
from engine.settings import Settings


def _ami(tmp_path: Path, **kwargs: object) -> AmiConnector:
    connector = connector_from(
        Settings(data_dir=tmp_path, ami_host="pbx.example", ami_secret="s3cret", **kwargs)
    )
    assert isinstance(connector, AmiConnector)
    return connector


def test_no_host_is_the_built_in_fake_pbx(tmp_path: Path) -> None:
    assert isinstance(connector_from(Settings(data_dir=tmp_path)), FakePbx)


def test_defaults_read_pjsip_sip_iax2_and_local_channels(tmp_path: Path) -> None:
    connector = _ami(tmp_path)
    assert connector.config.device_pattern == DEFAULT_DEVICE_PATTERN
    assert connector.config.internal_contexts == ("from-internal",)
    assert connector._tracker.extension_of("PJSIP/101-00000a1b") == "101"


def test_channel_pattern_and_operator_contexts_come_from_settings(tmp_path: Path) -> None:
    connector = _ami(tmp_path, ami_context="operators", ami_device_pattern=r"^SIP/op(?P<ext>\d+)-")
    # Originate dials in ami_context, so calls starting there are an operator's: outbound;
    # so are the desk phones' in the usual from-internal.
    assert connector.config.internal_contexts == ("from-internal", "operators")
    assert connector.config.originate_context == "operators"
    assert connector._tracker.extension_of("SIP/op205-0001") == "205"
    assert connector._tracker.extension_of("PJSIP/205-0001") is None

    more = _ami(tmp_path, ami_internal_contexts=["operators", "from-internal"])
    assert more.config.internal_contexts == ("operators", "from-internal")


def test_operator_contexts_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERLINE_AMI_INTERNAL_CONTEXTS", '["desk", "softphones"]')
    monkeypatch.setenv("TIERLINE_AMI_DEVICE_PATTERN", r"^PJSIP/(?P<ext>\d{3})")
    settings = Settings(data_dir=tmp_path)
    assert settings.ami_internal_contexts == ["desk", "softphones"]
    assert settings.ami_device_pattern == r"^PJSIP/(?P<ext>\d{3})"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"^PJSIP/(\d+)-", "needs a group named ext"),
        (r"^PJSIP/((?P<ext>\d+)", "not a regular expression"),
    ],
)
def test_a_bad_channel_pattern_is_refused_at_start_up_by_name(
    tmp_path: Path, pattern: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        Settings(data_dir=tmp_path, ami_device_pattern=pattern)
    assert "ami_device_pattern" in str(caught.value)


def test_the_connector_config_makes_the_same_check(tmp_path: Path) -> None:
    """Code that builds an AmiConfig without settings (tests, the bench) is held to it too."""
    with pytest.raises(ValueError, match="needs a group named ext"):
        AmiConfig(host="pbx.example", username="u", device_pattern=r"^PJSIP/(\d+)-")

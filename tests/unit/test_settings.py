"""Settings: read from the environment in one place, with one clear error per bad value."""

import pytest

from shared import settings


def test_defaults_and_overrides():
    default = settings.load({})
    assert default.redis_url is None and default.visibility_timeout_s == 3600 and default.task_time_limit_s == 1800
    assert default.in_flight_mib == 64
    custom = settings.load({"REDIS_URL": "redis://h:1/2", "WAVESHIELD_IN_FLIGHT_MIB": "8", "WAVESHIELD_TORCH_THREADS": "2"})
    assert (custom.redis_url, custom.in_flight_mib, custom.torch_threads) == ("redis://h:1/2", 8, 2)
    assert (default.redis_retry_s, default.stall_timeout_s) == (60, 600)
    patient = settings.load({"WAVESHIELD_REDIS_RETRY": "5", "WAVESHIELD_STALL_TIMEOUT": "30"})
    assert (patient.redis_retry_s, patient.stall_timeout_s) == (5, 30)


@pytest.mark.parametrize("name, value, message", [
    ("WAVESHIELD_BLOB_TTL", "soon", "whole number"),
    ("WAVESHIELD_MAX_DELIVERIES", "0", "at least 1"),
    ("WAVESHIELD_REDIS_RETRY", "1m", "whole number"),
    ("WAVESHIELD_STALL_TIMEOUT", "0", "at least 1"),
])
def test_bad_numbers_are_refused(name, value, message):
    with pytest.raises(ValueError, match=f"{name}.*{message}"):
        settings.load({name: value})


def test_the_replaced_high_water_setting_names_its_successor():
    with pytest.raises(ValueError, match="WAVESHIELD_IN_FLIGHT_MIB"):
        settings.load({"WAVESHIELD_HIGH_WATER": "8"})


def test_visibility_timeout_must_exceed_the_task_time_limit():
    # A task still running at the visibility timeout would be delivered twice.
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT .600 s. must exceed .*TASK_TIME_LIMIT .1800 s."):
        settings.load({"WAVESHIELD_VISIBILITY_TIMEOUT": "600"})
    assert settings.load({"WAVESHIELD_VISIBILITY_TIMEOUT": "20", "WAVESHIELD_TASK_TIME_LIMIT": "15"}).task_time_limit_s == 15


def test_flower_credentials_come_from_the_environment_checked_and_never_shown():
    assert settings.load({}).flower_basic_auth is None
    chosen = settings.load({"FLOWER_BASIC_AUTH": "ops:s3cret,audit:pw2"})
    assert chosen.flower_basic_auth == "ops:s3cret,audit:pw2"
    assert "s3cret" not in chosen.as_text() + repr(chosen) + str(chosen.as_dict())
    for bad in ("ops", "ops:", ":pw", "ops:pw,audit"):
        with pytest.raises(ValueError, match="FLOWER_BASIC_AUTH must be user:password"):
            settings.load({"FLOWER_BASIC_AUTH": bad})


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@h:6379/12", "redis://:***@h:6379/12"),
    ("rediss://ops:s3cret@h:6380/0?ssl_cert_reqs=required", "rediss://ops:***@h:6380/0?ssl_cert_reqs=required"),
    ("redis://s3cret@h/0", "redis://***@h/0"),  # a lone user-info: some clients take it for a password
    ("redis://h/0?db=1&password=s3cret", "redis://h/0?db=1&password=***"),
    ("unix://:s3cret@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
    ("ops:s3cret@h:6379", "ops:***@h:6379"),  # no scheme: what a parser takes for the scheme is masked anyway
    ("redis://:p@ss@word@h/0", "redis://:***@h/0"),  # an '@' in the password
    ("redis://u:s3#cret@h:1/0", "redis://u:***@h:1/0"),  # '#', '/' and '?' in a password end no authority
    ("redis://u:s3/cret@h:1", "redis://u:***@h:1"),
    ("redis://:s3?cret@h", "redis://:***@h"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_a_redis_url_is_shown_with_its_password_masked(url, shown):
    assert settings.masked(url) == shown
    assert "s3cret" not in settings.load({"REDIS_URL": "redis://:s3cret@h/0"}).as_text()
    assert "s3cret" not in repr(settings.load({"REDIS_URL": "redis://:s3cret@h/0"}))


@pytest.mark.parametrize("url", ["localhost:6379", "ops:s3cret@h:6379", "http://:s3cret@h/", "redis://:s3cret@h:6x79/0",
                                 "redis:/h"])
def test_a_redis_url_that_redis_cannot_use_is_refused_when_read_masked(url):
    with pytest.raises(ValueError, match="is not a Redis URL") as refused:
        settings.load({"REDIS_URL": url})
    assert "s3cret" not in str(refused.value) and str(refused.value).startswith(f"REDIS_URL {settings.masked(url)} ")
    for fine in ("redis://h", "rediss://h:6380/1", "unix:///run/redis.sock"):
        assert settings.load({"REDIS_URL": fine}).redis_url == fine


def test_up_refuses_flower_without_credentials():
    from producers.stack import serve

    with pytest.raises(ValueError, match="never runs without authentication"):
        serve(settings.load({}), flower=True)

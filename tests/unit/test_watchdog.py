"""Watchdogs for ``evac agent``: the device semantics (the magic close above all) and the
registry of methods that ``agent.watchdog`` names.

The ``device`` method runs against a plain file standing in for ``/dev/watchdog``, with
the ioctls injected: the kernel here cannot give a test its own watchdog device.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evac import hookimpl
from evac.errors import ConfigError, EvacError
from evac.plugins import plugin_manager
from evac.watchdog import FileWatchdog, Watchdog, WatchdogError, WatchdogMethod, watchdog_for, watchdog_methods
from evac_plugins import watchdog_device
from evac_plugins.watchdog_device import WDIOC_GETTIMEOUT, WDIOC_SETTIMEOUT


class FakeDriver:
    """The ioctls of a watchdog driver that runs ``granularity``-second multiples (rounding up)."""

    def __init__(self, granularity: int = 1, settable: bool = True, fixed: int = 60) -> None:
        self.granularity = granularity
        self.settable = settable
        self.timeout = fixed
        self.asked: list[int] = []

    def ioctl(self, fd: int, request: int, arg: bytes) -> bytes:
        if request == WDIOC_SETTIMEOUT:
            (seconds,) = struct.unpack("i", arg)
            self.asked.append(seconds)
            if not self.settable:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
            self.timeout = -(-seconds // self.granularity) * self.granularity
            return struct.pack("i", self.timeout)
        if request == WDIOC_GETTIMEOUT:
            return struct.pack("i", self.timeout)
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")


@pytest.fixture
def device(tmp_path: Path) -> Path:
    path = tmp_path / "watchdog"
    path.touch()
    return path


def device_dog(device: Path, driver: FakeDriver) -> FileWatchdog:
    dog: FileWatchdog = watchdog_device.device_watchdog({"device": str(device)}, ioctl=driver.ioctl)
    return dog


# ---------------------------------------------------------------- the device method
def test_arming_sets_the_timeout_and_feeds_once(device: Path) -> None:
    driver = FakeDriver()
    dog = device_dog(device, driver)
    assert dog.arm(10) == 10.0
    assert (driver.asked, device.read_bytes(), dog.armed) == ([10], b"\0", True)


def test_arm_returns_the_timeout_the_device_reads_back_not_the_one_asked_for(device: Path) -> None:
    assert device_dog(device, FakeDriver(granularity=4)).arm(9) == 12.0


def test_a_fractional_timeout_is_asked_for_rounded_down_so_the_device_never_fires_late(device: Path) -> None:
    driver = FakeDriver()
    assert device_dog(device, driver).arm(2.5) == 2.0
    assert driver.asked == [2]


def test_a_device_with_a_fixed_timeout_reports_the_one_it_runs(device: Path) -> None:
    assert device_dog(device, FakeDriver(settable=False, fixed=30)).arm(10) == 30.0


def test_each_feed_writes_one_byte_that_is_not_the_magic_v(device: Path) -> None:
    dog = device_dog(device, FakeDriver())
    dog.arm(10)
    dog.feed()
    dog.feed()
    assert device.read_bytes() == b"\0\0\0"


def test_disarm_is_the_magic_close_v_then_close(device: Path) -> None:
    dog = device_dog(device, FakeDriver())
    dog.arm(10)
    dog.disarm()
    assert (device.read_bytes(), dog.armed) == (b"\0V", False)


def test_abandon_closes_without_the_magic_v_so_the_timer_keeps_running(device: Path) -> None:
    dog = device_dog(device, FakeDriver())
    dog.arm(10)
    dog.abandon()
    assert (device.read_bytes(), dog.armed) == (b"\0", False)


def test_disarm_and_abandon_of_an_unarmed_watchdog_write_nothing(device: Path) -> None:
    dog = device_dog(device, FakeDriver())
    dog.disarm()
    dog.abandon()
    assert device.read_bytes() == b""


def test_feeding_an_unarmed_watchdog_is_an_error(device: Path) -> None:
    with pytest.raises(WatchdogError, match="fed while not armed"):
        device_dog(device, FakeDriver()).feed()


def test_arming_twice_is_an_error(device: Path) -> None:
    dog = device_dog(device, FakeDriver())
    dog.arm(10)
    with pytest.raises(WatchdogError, match="already armed"):
        dog.arm(10)


def test_a_file_that_is_not_a_watchdog_device_is_refused_in_one_line_and_closed_with_the_magic_v(
    device: Path,
) -> None:
    dog = watchdog_device.device_watchdog({"device": str(device)})  # the real ioctl: a plain file refuses it
    with pytest.raises(WatchdogError, match=r"not a watchdog device") as refused:
        dog.arm(10)
    assert "\n" not in str(refused.value)
    assert (device.read_bytes(), dog.armed) == (b"V", False)


def test_a_timeout_the_driver_refuses_is_an_error_naming_it(device: Path) -> None:
    def refuse(fd: int, request: int, arg: bytes) -> bytes:
        raise OSError(errno.EINVAL, "Invalid argument")

    with pytest.raises(WatchdogError, match="refuses a timeout of 600 s: Invalid argument"):
        watchdog_device.device_watchdog({"device": str(device)}, ioctl=refuse).arm(600)


def test_a_missing_device_says_how_to_get_softdog(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match=r"no such device .*modprobe softdog"):
        watchdog_device.device_watchdog({"device": str(tmp_path / "watchdog")}).arm(10)


def test_the_device_path_must_be_absolute() -> None:
    with pytest.raises(ConfigError, match="agent.watchdog.device: expected a device path"):
        watchdog_device.device_watchdog({"device": "watchdog"})


def test_a_watchdog_error_is_an_evac_error_so_the_cli_prints_one_line() -> None:
    assert issubclass(WatchdogError, EvacError)


def test_a_file_watchdog_is_a_watchdog(device: Path) -> None:
    assert isinstance(device_dog(device, FakeDriver()), Watchdog)


# ---------------------------------------------------------------- the registry: evac_watchdogs
class Dogs:
    def __init__(self, *names: str, required: tuple[str, ...] = ()) -> None:
        self.names = names
        self.required = required
        self.built: list[Mapping[str, Any]] = []

    def build(self, settings: Mapping[str, Any]) -> Watchdog:
        self.built.append(settings)
        return FileWatchdog("/nonexistent", lambda fd, timeout: timeout)

    @hookimpl
    def evac_watchdogs(self) -> list[WatchdogMethod]:
        return [WatchdogMethod(n, self.build, required=self.required, optional=("bus",)) for n in self.names]


def test_the_built_in_plugin_registers_the_device_method() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(watchdog_device)
    method = watchdog_methods(pm)["device"]
    assert (method.required, method.optional) == ((), ("device",))


def test_watchdog_for_builds_the_named_method_from_its_settings_without_opening_it(tmp_path: Path) -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(watchdog_device)
    dog = watchdog_for(pm, {"method": "device", "device": str(tmp_path / "absent")})
    assert isinstance(dog, FileWatchdog) and dog.path == tmp_path / "absent" and not dog.armed


def test_the_method_gets_its_settings_without_method() -> None:
    dogs = Dogs("ipmi", required=("bmc",))
    pm = plugin_manager(load_entrypoints=False)
    pm.register(dogs)
    watchdog_for(pm, {"method": "ipmi", "bmc": "10.0.0.5"})
    assert dogs.built == [{"bmc": "10.0.0.5"}]


def test_two_plugins_registering_one_watchdog_method_is_an_error_naming_both() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Dogs("ipmi"), name="one")
    pm.register(Dogs("ipmi"), name="two")
    with pytest.raises(
        ConfigError, match="watchdog method 'ipmi' is registered by two plugins: '(one|two)' and '(two|one)'"
    ):
        watchdog_methods(pm)


def test_an_unknown_method_is_an_error_that_suggests_the_near_one() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(watchdog_device)
    with pytest.raises(
        ConfigError,
        match=r"^agent.watchdog.method: unknown watchdog method 'devic' \(did you mean 'device'\?\); known: device$",
    ):
        watchdog_for(pm, {"method": "devic"})


def test_no_method_is_an_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^agent.watchdog.method: required"):
        watchdog_for(plugin_manager(load_entrypoints=False), {"device": "/dev/watchdog"})


def test_an_unknown_setting_is_an_error_naming_it_and_the_ones_the_method_takes() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(watchdog_device)
    with pytest.raises(
        ConfigError,
        match=r"^agent.watchdog.devcie: unknown setting for watchdog method 'device' \(did you mean 'device'\?\); it takes: device$",
    ):
        watchdog_for(pm, {"method": "device", "devcie": "/dev/watchdog1"})


def test_a_missing_required_setting_is_an_error_naming_it() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Dogs("ipmi", required=("bmc",)))
    with pytest.raises(ConfigError, match=r"^agent.watchdog.bmc: required by watchdog method 'ipmi'$"):
        watchdog_for(pm, {"method": "ipmi"})


def test_a_method_name_must_be_a_lowercase_word() -> None:
    with pytest.raises(ValueError, match="expected a lowercase word"):
        WatchdogMethod("Soft Dog", lambda settings: FileWatchdog("/dev/null", lambda fd, t: t))

"""The crontab schedules' time-zone choices, made when first read instead of at every start.

django_celery_beat's ``CrontabSchedule.timezone`` is a django-timezone-field ``TimeZoneField``. Its zoneinfo backend
lists the system's zones twice when imported (a walk of the zoneinfo tree, each file opened), and the field makes a
``ZoneInfo`` of each of the ~600 zones when its model class is made: in every process (a command, a worker, the web
app), about 40 ms of a half-second start, for choices that only the admin's crontab form, a crontab's validation, the
migrations and the system checks (``check``, ``migrate``, ``runserver``) read (reported upstream: django-timezone-field
pull request 156). ``timezone_choices_lazy`` makes
both happen the first time they are read; what they hold is what the package makes.
"""
import contextlib
import sys
import threading
import zoneinfo
from collections.abc import Iterator

from django.utils.choices import BaseChoiceIterator


class _Zones:
    """A zoneinfo backend's zone names, ``zoneinfo.available_timezones()`` less ``Factory`` as the backend has them,
    listed the first time they are read (then kept on the class, as the backend keeps them). While held on this
    thread (``_zones_held``), read as none: the field's ``__init__`` reads them only to make the choices that are now
    made later; another thread reading them meanwhile gets them all."""

    holding = threading.local()

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner) -> set[str]:
        if getattr(_Zones.holding, "held", False):
            return set()
        zones = zoneinfo.available_timezones()
        zones.discard("Factory")  # as the backend does: it can fail to load on some systems
        setattr(owner, self.name, zones)
        return zones


class _DefaultZones:
    """A field's ``default_tzs`` (a ``ZoneInfo`` of every zone), made the first time it is read."""

    def __get__(self, field, owner):
        if field is None:
            return self
        zones = field.__dict__["default_tzs"] = [field.tz_backend.to_tzobj(name) for name in
                                                 field.tz_backend.base_tzstrs]
        return zones


class _ZoneChoices(BaseChoiceIterator):
    """A field's default choices, the package's ``standard(default_tzs)``, made the first time they are read. Django
    keeps a ``BaseChoiceIterator`` as it is (a form, a validation, a migration's comparison iterate it), where a
    callable's choices would be written into the migrations as the callable."""

    def __init__(self, field, standard) -> None:
        self.field, self.standard, self.made = field, standard, None

    def __iter__(self):
        if self.made is None:
            self.made = self.standard(self.field.default_tzs)
        return iter(self.made)


@contextlib.contextmanager
def _zones_held() -> Iterator[None]:
    _Zones.holding.held = True
    try:
        yield
    finally:
        _Zones.holding.held = False


def timezone_choices_lazy() -> None:
    """Make django-timezone-field list the zones and make its default choices when they are first read (see the
    module docstring); a field given its own choices or display, or on pytz, is made as the package makes it. Call
    before the models load; idempotent, and nothing is done when the package is loaded already."""
    if "timezone_field.backends.zoneinfo" in sys.modules:
        return
    listing = zoneinfo.available_timezones
    zoneinfo.available_timezones = set  # the backend's class body lists them twice: two empty sets, replaced below
    try:
        from timezone_field.backends.zoneinfo import ZoneInfoBackend
        from timezone_field.choices import standard
        from timezone_field.fields import TimeZoneField
    finally:
        zoneinfo.available_timezones = listing
    ZoneInfoBackend.all_tzstrs = _Zones("all_tzstrs")
    ZoneInfoBackend.base_tzstrs = _Zones("base_tzstrs")
    TimeZoneField.default_tzs = _DefaultZones()
    made = TimeZoneField.__init__

    def __init__(self, *args, **kwargs):
        if "choices" in kwargs or kwargs.get("choices_display") is not None or kwargs.get("use_pytz"):
            made(self, *args, **kwargs)
            return
        with _zones_held():
            made(self, *args, **kwargs)
        del self.default_tzs  # made when first read (``_DefaultZones``)
        self.choices = _ZoneChoices(self, standard)

    TimeZoneField.__init__ = __init__


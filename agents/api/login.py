"""The password sign-in forms, the browsable API's ``/api/auth/login/`` and the admin's ``/admin/login/``, limited like
the API: a wrong password or an unknown user counts against the client address's failed authentications
(``agents.api.throttling``), and an address over ``AGENTS_API_THROTTLE_AUTH_FAILURES`` is refused before any
password is checked, with a form error, status 429 and ``Retry-After``."""
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.utils.translation import ngettext

from agents.api.throttling import auth_failure_record, auth_failure_refusal

#: The code of the form error that refuses a sign-in from an address over its failed authentications.
REFUSED_CODE = "too_many_failures"


class _FailureLimited:
    """Mixed into an ``AuthenticationForm`` (which the login view gives the request): refuses the sign-in while the
    client address is over its failed authentications, and counts a wrong password or an unknown (or inactive) user.
    A right password refused by ``confirm_login_allowed`` (the admin's non-staff user) is not counted: it is no
    guess, and its error reads the same as a wrong password's."""

    #: Whole seconds until a refused address may try again (``Retry-After``); None unless this form was refused.
    retry_after_s: int | None = None

    def clean(self):
        if (refusal := auth_failure_refusal(self.request)) is not None:
            self.retry_after_s = wait_s = refusal[1]
            raise ValidationError(
                ngettext("Too many failed sign-ins from your address; try again in %(wait_s)d second.",
                         "Too many failed sign-ins from your address; try again in %(wait_s)d seconds.", wait_s),
                code=REFUSED_CODE, params={"wait_s": wait_s})
        try:
            return super().clean()
        except ValidationError:
            if self.user_cache is None:
                auth_failure_record(self.request)
            raise


class FailureLimitedAuthenticationForm(_FailureLimited, AuthenticationForm):
    """Django's sign-in form, limited per client address (the browsable API's login)."""


class FailureLimitedAdminAuthenticationForm(_FailureLimited, AdminAuthenticationForm):
    """The admin's sign-in form (staff users only), limited per client address."""


def login_refusal_status(response: HttpResponse) -> HttpResponse:
    """``response`` answered 429 with ``Retry-After`` when it shows a sign-in form refused for too many failures."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if getattr(form, "retry_after_s", None) is not None:
        response.status_code = 429
        response["Retry-After"] = str(form.retry_after_s)
    return response


class FailureLimitedLoginView(LoginView):
    """Django's ``LoginView`` with the limited form; a refused sign-in is answered 429."""

    authentication_form = FailureLimitedAuthenticationForm

    def form_invalid(self, form):
        return login_refusal_status(super().form_invalid(form))


class FailureLimitedAdminSite(AdminSite):
    """The admin site (``agentsite.apps.AdminConfig.default_site``), its sign-in form limited; a refused sign-in is
    answered 429."""

    login_form = FailureLimitedAdminAuthenticationForm

    def login(self, request, extra_context=None):
        return login_refusal_status(super().login(request, extra_context))

"""The admins Django's auth and DRF's authtoken register (users, groups, API tokens), registered again with this
project's change list (``SafeFilterMixin``): a lookup typed into the query string that cannot be run is the redirect
of a bad filter there too, not a server error. Their modules are imported first, so theirs are in place."""
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.models import Group, User
from rest_framework.authtoken import admin as token_admin
from rest_framework.authtoken.models import TokenProxy

from agents.admin.common import SafeFilterChangeList, SafeFilterMixin


class UserAdmin(SafeFilterMixin, auth_admin.UserAdmin):
    """Django's users."""


class GroupAdmin(SafeFilterMixin, auth_admin.GroupAdmin):
    """Django's groups (a team is one, ``agents.admin.security``)."""


class TokenChangeList(SafeFilterChangeList, token_admin.TokenChangeList):
    """DRF's token list, whose rows link to their user's token by the user's id."""


class TokenAdmin(SafeFilterMixin, token_admin.TokenAdmin):
    """DRF's API tokens."""

    def get_changelist(self, request, **kwargs):
        return TokenChangeList


for model, model_admin in ((User, UserAdmin), (Group, GroupAdmin), (TokenProxy, TokenAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)

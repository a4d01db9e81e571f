"""Request fields shared by the API's serializers."""
from rest_framework import serializers


class ChoiceField(serializers.ChoiceField):
    """DRF's choice field whose refusal lists the choices (``"ping" is not a valid choice; one of: ...``), as every
    other refusal of the API names what it takes."""

    default_error_messages = {"invalid_choice": '"{input}" is not a valid choice; one of: {choices}.'}

    def fail(self, key, **kwargs):
        if key == "invalid_choice":
            kwargs["choices"] = ", ".join(map(str, self.choice_strings_to_values))
        super().fail(key, **kwargs)

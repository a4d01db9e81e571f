"""``manage.py teams``: mark groups as teams, add and remove members, list teams."""
from agents.core.teams import team_create, team_describe, team_member_set
from agents.management.base import AgentsCommand
from agents.models import Team


class Command(AgentsCommand):
    """Teams own definitions and what they produce; a team is a group marked as one."""

    help = ("Teams: `teams add NAME [--description TEXT]` marks group NAME as a team (made if missing; an existing "
            "team's description is replaced when one is given); `teams member NAME USER [--remove]`; "
            "`teams list [--json]`. Each is safe to run again: it says when nothing changed.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{add,member,list}")
        add = sub.add_parser("add", help="Mark group NAME as a team (the group is made when missing).")
        add.add_argument("name")
        add.add_argument("--description", help="What the team is for; given for an existing team, it replaces the "
                                               "one it has (kept when omitted).")
        member = sub.add_parser("member", help="Add USER to team NAME (or take them out with --remove).")
        member.add_argument("name")
        member.add_argument("username", metavar="USER")
        member.add_argument("--remove", action="store_true")
        listing = sub.add_parser("list", help="List teams and their members.")
        self.json_argument_add(listing)

    def handle_add(self, *, name, description=None, **options):
        team, created = team_create(name=name, description=description or "")
        if created:
            said = "added"
        elif description is not None and team_describe(team=team.name, description=description):
            said = "exists already; its description was updated"
        else:
            said = "exists already; nothing changed"
        self.stdout.write(f"team {team.name} {said}")

    def handle_member(self, *, name, username, remove=False, **options):
        if team_member_set(team=name, username=username, member=not remove):
            said = f"{'removed from' if remove else 'added to'} team {name}"
        elif remove:
            said = f"was not a member of team {name}; nothing changed"
        else:
            said = f"is a member of team {name} already; nothing changed"
        self.stdout.write(f"{username} {said}")

    def handle_list(self, *, json=False, **options):
        rows = [{"team": team.name, "description": team.description,
                 "members": sorted(team.group.user_set.values_list("username", flat=True))}
                for team in Team.objects.select_related("group").order_by("group__name")]
        if json:
            self.json_write(rows)
            return
        for row in rows:
            self.stdout.write(f"{row['team']}: {', '.join(row['members']) or '(no members)'}")

"""``manage.py teams``: mark groups as teams, add and remove members, list teams."""
from agents.core.teams import team_create, team_member_set
from agents.management.base import AgentsCommand
from agents.models import Team


class Command(AgentsCommand):
    """Teams own definitions and what they produce; a team is a group marked as one."""

    help = ("Teams: `teams add NAME` marks group NAME as a team (made if missing); `teams member NAME USER "
            "[--remove]`; `teams list [--json]`.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{add,member,list}")
        add = sub.add_parser("add", help="Mark group NAME as a team (the group is made when missing).")
        add.add_argument("name")
        add.add_argument("--description", default="")
        member = sub.add_parser("member", help="Add USER to team NAME (or take them out with --remove).")
        member.add_argument("name")
        member.add_argument("username", metavar="USER")
        member.add_argument("--remove", action="store_true")
        listing = sub.add_parser("list", help="List teams and their members.")
        self.json_argument_add(listing)

    def handle_add(self, *, name, description="", **options):
        team, created = team_create(name=name, description=description)
        self.stdout.write(f"team {team.name} {'added' if created else 'exists already'}")

    def handle_member(self, *, name, username, remove=False, **options):
        team_member_set(team=name, username=username, member=not remove)
        self.stdout.write(f"{username} {'removed from' if remove else 'added to'} team {name}")

    def handle_list(self, *, json=False, **options):
        rows = [{"team": team.name, "description": team.description,
                 "members": sorted(team.group.user_set.values_list("username", flat=True))}
                for team in Team.objects.select_related("group").order_by("group__name")]
        if json:
            self.json_write(rows)
            return
        for row in rows:
            self.stdout.write(f"{row['team']}: {', '.join(row['members']) or '(no members)'}")

"""``manage.py pools``: the named pools whose slots workflow steps (``pool: NAME``) take while they run."""
from agents.management.base import AgentsCommand
from agents.workflows import selectors, services


class Command(AgentsCommand):
    """Create, resize, list and delete pools."""

    help = "Pools: `pools set NAME --slots N [--description T]`; `pools list [--json]`; `pools delete NAME`."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{set,list,delete}")
        setting = sub.add_parser("set", help="Create pool NAME, or change its slots (steps waiting start at once).")
        setting.add_argument("name")
        setting.add_argument("--slots", type=int, required=True, help="Slots the steps of the pool share.")
        setting.add_argument("--description")
        listing = sub.add_parser("list", help="Each pool with its slots, the slots taken and the steps waiting.")
        self.json_argument_add(listing)
        delete = sub.add_parser("delete", help="Delete a pool no step uses or waits for.")
        delete.add_argument("name")

    def handle_set(self, *, name, slots, description=None, **options):
        pool, created = services.pool_set(name=name, slots=slots, description=description)
        self.stdout.write(f"pool {pool.name}: {'created' if created else 'set'} with {pool.slots} slots")

    def handle_list(self, *, json=False, **options):
        rows = selectors.pool_list()
        if json:
            self.json_write(rows)
            return
        if not rows:
            self.stdout.write("No pools. Create one: `manage.py pools set payments --slots 2`.")
        for row in rows:
            self.stdout.write(f"{row['name']}: {row['used']} of {row['slots']} slots taken, {row['waiting']} steps "
                              f"waiting  {row['description']}".rstrip())

    def handle_delete(self, *, name, **options):
        services.pool_delete(name=name)
        self.stdout.write(f"pool {name}: deleted")

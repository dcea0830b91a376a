"""`mocksync relay`: run the relay server in the foreground (docs/design/cli.md "Groups of commands").

Thin: parse the options into a `RelayConfig` (plan limits through `space.quotas.get_plan`, TLS
through `relay.server.tls_context`), run until SIGTERM/SIGINT, then stop cleanly (sessions are
told `shutting_down`, the database is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import replace
from pathlib import Path

import click

from ..errors import MocksyncError
from .common import Ctx, examples, fail, main_group


@main_group.command("relay", epilog=examples(
    "mocksync relay",
    "mocksync relay --port 9000 --data /var/lib/mocksync-relay --plan enterprise",
    "mocksync relay --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem",
    "mocksync relay --plan team --max-envs 50 --max-devices-per-member 4",
    "mocksync relay --port 8765 --public-url https://relay.example.com",
    "mocksync relay --db postgresql://mocksync@db.internal:5432/mocksync --host 0.0.0.0"))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")
@click.option("--data", "data", type=click.Path(file_okay=False),
              help="Directory for the relay's database (default: HOME/relay).")
@click.option("--db", "db_url", envvar="MOCKSYNC_RELAY_DB", metavar="URL",
              help="Keep state in PostgreSQL (postgresql://USER@HOST:PORT/DB; env "
                   "MOCKSYNC_RELAY_DB) instead of SQLite under --data. Any number of relays "
                   "given the same database serve the same spaces.")
@click.option("--plan", type=click.Choice(["solo", "team", "enterprise"]), default="team",
              show_default=True, help="Quota plan for every space on this relay.")
@click.option("--max-envs", type=int, help="Override: environments per space.")
@click.option("--max-env-bytes", type=int, help="Override: bytes per environment (compact JSON).")
@click.option("--max-devices-per-member", type=int,
              help="Override: simultaneous devices per member.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True),
              help="PEM certificate chain (serve https/wss).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True),
              help="PEM private key of --tls-cert.")
@click.option("--public-url", "public_urls", multiple=True, metavar="URL",
              help="An address devices dial this relay by (repeatable). Set it behind a proxy: "
                   "devices sign the address they dialled, and only these are accepted.")
@click.option("--retention", "retention_s", type=click.FloatRange(0, 10 * 365 * 86400),
              default=None, metavar="SECONDS",
              help="Drop change sets an environment's snapshot covers after this long even if "
                   "some device has not fetched them (default 30 days).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_obj
def relay_cmd(ctx: Ctx, host: str, port: int, data: str | None, db_url: str | None, plan: str,
              max_envs: int | None, max_env_bytes: int | None,
              max_devices_per_member: int | None, tls_cert: str | None, tls_key: str | None,
              public_urls: tuple[str, ...], retention_s: float | None, verbose: int) -> None:
    """Run a relay: auth, encrypted store-and-forward, presence, signaling, quotas.

    The relay holds only ciphertext and signed membership logs; it cannot read environments.
    Daemons use it with `mocksync daemon --relay http://HOST:PORT`. SIGTERM stops it cleanly.
    """
    from ..relay.server import RelayConfig, tls_context
    from ..space.quotas import get_plan

    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose + 1, 2)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together: give both or neither", 2)
    try:
        limits = get_plan(plan, max_envs=max_envs, max_env_bytes=max_env_bytes,
                          max_devices_per_member=max_devices_per_member)
        ssl_ctx = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
        from ..relay.auth import relay_origin

        for u in public_urls:
            relay_origin(u)  # a malformed address is a usage error, said before starting
        if db_url:
            from ..relay.pgstorage import check_url

            check_url(db_url)
        config = RelayConfig(data_dir=Path(data) if data else ctx.home.root / "relay",
                             host=host, port=port, plan=limits, ssl=ssl_ctx,
                             public_urls=tuple(public_urls), db_url=db_url or None)
        if retention_s is not None:
            config = replace(config, retention_s=retention_s)
        asyncio.run(_serve(config))
    except MocksyncError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass
    click.echo("mocksync relay: stopped", err=True)


async def _serve(config) -> None:
    from ..relay.auth import fingerprint
    from ..relay.server import RelayServer, run_relay

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    def ready(server: RelayServer) -> None:
        p = config.plan
        if config.db_url:
            from ..relay.pgstorage import redact

            where = redact(config.db_url)
        else:
            where = str(config.data_dir)
        click.echo(f"mocksync relay: listening on {server.url}, plan {p.name} ({p.max_envs} "
                   f"environments x {p.max_env_bytes:,} bytes, {p.max_devices_per_member} "
                   f"devices per member), data {where}, key "
                   f"{fingerprint(server.public_key)}; Ctrl-C to stop", err=True)

    await run_relay(config, stop, ready)

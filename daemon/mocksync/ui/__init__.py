"""The local web page the daemon serves on 127.0.0.1 (issue 19).

The CLI stays the contract: the page is a thin aiohttp app (`app`) over the same control
methods the CLI calls (`ControlServer.call`), with decisions kept pure and tested without
sockets: sign-in and request checks in `auth`, what each page shows in `views`. Importing this
package is cheap; `app` (which loads Jinja2) is imported only when the page is on.
"""

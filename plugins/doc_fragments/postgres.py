# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # PostgreSQL connection options, named as community.postgresql names them.
    DOCUMENTATION = r"""
options:
  login_user:
    description:
      - The role to connect as.
    type: str
    default: postgres
    aliases: [ login ]
  login_password:
    description:
      - The password of O(login_user). Never logged.
    type: str
    default: ''
  login_host:
    description:
      - Host of the database server. Empty means the local unix socket.
    type: str
    default: ''
    aliases: [ host ]
  login_unix_socket:
    description:
      - Directory of the local unix socket, used when O(login_host) is empty.
    type: str
    default: ''
    aliases: [ unix_socket ]
  login_port:
    description:
      - Database server port.
    type: int
    default: 5432
    aliases: [ port ]
  login_db:
    description:
      - Database to connect to. Empty means the libpq default (the user's name).
    type: str
    default: ''
    aliases: [ db ]
  ssl_mode:
    description:
      - libpq C(sslmode) of the connection.
    type: str
    default: prefer
    choices: [ allow, disable, prefer, require, verify-ca, verify-full ]
  ca_cert:
    description:
      - File with the certificate authorities that sign the server certificate.
    type: str
    aliases: [ ssl_rootcert ]
  ssl_cert:
    description:
      - Client certificate file.
    type: path
  ssl_key:
    description:
      - Client private key file.
    type: path
  connect_timeout:
    description:
      - Seconds to wait for a connection before giving up.
    type: int
    default: 10
  connect_params:
    description:
      - Further libpq connection parameters, for example C(target_session_attrs).
    type: dict
    default: {}
requirements:
  - psycopg2 (C(psycopg2-binary) on PyPI)
notes:
  - Connection failures read C(unable to connect to database:) followed by the server's reason, without the password.
"""

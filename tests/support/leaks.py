"""Credentials leaked in real faults, as components report them."""

from __future__ import annotations

# Each leak: text as components report it, and the secrets in it.
LEAKS: dict[str, tuple[str, list[str]]] = {
    "trove guest agent: mysql -p in a ProcessExecutionError": (
        """Traceback (most recent call last):
  File "/opt/stack/trove/trove/guestagent/datastore/mysql_common/service.py", line 412, in secure
    utils.execute_with_timeout("mysql", "-u", "root", "-p" + root_pass, "-e", sql)
  File "/usr/lib/python3/dist-packages/oslo_concurrency/processutils.py", line 438, in execute
    raise ProcessExecutionError(exit_code=_returncode,
oslo_concurrency.processutils.ProcessExecutionError: Unexpected error while running command.
Command: sudo mysql -u root -pV3ry$ecretR00t -e UPDATE mysql.user SET plugin='' WHERE User='root'
Exit code: 1
Stdout: ''
Stderr: "ERROR 1045 (28000): Access denied for user 'root'@'localhost' (using password: YES)\\n"
""",
        ["V3ry$ecretR00t"],
    ),
    "argument list of a command": (
        "ProcessExecutionError: ['mysqldump', '-u', 'os_admin', '-pZx9Qw7Lm', "
        "'--password', 'Zx9Qw7Lm2', '--all-databases']",
        ["Zx9Qw7Lm"],
    ),
    "xtrabackup and mysqladmin command lines": (
        "Command: sudo innobackupex --user=os_admin --password=Xtr4B4ckup --stream=xbstream "
        "/var/lib/mysql\nCommand: mysqladmin -u root password N3wR00tPass\n"
        "Command: pg_dump --username postgres --password-file /etc/pg.pw --password PgDump55",
        ["Xtr4B4ckup", "N3wR00tPass", "PgDump55"],
    ),
    "oslo.db connection URL": (
        "2026-05-06 21:30:06.250 ERROR oslo_db.sqlalchemy.engines [-] Database server has gone "
        "away: mysql+pymysql://nova:NOVA_DBPASS@controller/nova?charset=utf8: "
        "(pymysql.err.OperationalError) (2013, 'Lost connection to MySQL server during query')",
        ["NOVA_DBPASS"],
    ),
    "URLs of other services, a password holding '@'": (
        "transport_url = rabbit://openstack:RABBIT_PASS@controller:5672/\n"
        "redis://:R3disPa55@redis:6379/0 postgresql://postgres:Pg@Pa55@db:5432/postgres",
        ["RABBIT_PASS", "R3disPa55", "Pg@Pa55", "@Pa55"],
    ),
    "requests header dump": (
        """requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://swift:8080/v1/AUTH_x
request headers: {'User-Agent': 'python-requests/2.31.0', 'Accept-Encoding': 'gzip, deflate', \
'Accept': '*/*', 'Connection': 'keep-alive', \
'Authorization': 'Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0cm92ZSJ9.c2lnbmF0dXJl', \
'X-Auth-Token': 'gAAAAABl3xJ2nQ8v', 'Cookie': 'session=5f2b9c'}""",
        ["eyJhbGciOiJSUzI1NiJ9", "c2lnbmF0dXJl", "gAAAAABl3xJ2nQ8v", "5f2b9c"],
    ),
    "raw HTTP headers": (
        "GET /v2.1/servers HTTP/1.1\r\nHost: controller\r\n"
        "Authorization: Basic YWRtaW46c2VjcmV0\r\n"
        "Proxy-Authorization: Digest dXNlcjpwYXNz\r\nX-Auth-Token: 7a6b5c4d3e2f\r\n"
        "X-Subject-Token: 9f8e7d6c5b4a\r\n",
        ["YWRtaW46c2VjcmV0", "dXNlcjpwYXNz", "7a6b5c4d3e2f", "9f8e7d6c5b4a"],
    ),
    "trove prepare() arguments": (
        "prepare() failed with {'packages': [], 'databases': [], 'users': [{'_name': 'dbuser', "
        "'_password': 'Us3rPa55', '_host': '%'}], 'device_path': '/dev/vdb', "
        "'mount_point': '/var/lib/mysql', 'root_password': u'r00tPa55', 'backup_info': None}",
        ["Us3rPa55", "r00tPa55"],
    ),
    "keystone authentication body": (
        'keystoneauth1.exceptions.http.Unauthorized: body {"auth": {"identity": {"methods": '
        '["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, '
        '"password": "ADMIN_PASS"}}}}}',
        ["ADMIN_PASS"],
    ),
    "keyword arguments and configuration files": (
        "connect(host='db', user='os_admin', passwd='Kw4rgPwd', port=3306)\n"
        '[client]\nuser = os_admin\npassword = "A0d2Cnf"\n'
        "OS_PASSWORD=EnvPa55 OS_AUTH_TOKEN=EnvT0ken PGPASSWORD=PgEnv\n"
        "admin_pass: YamlPa55\nsecret = 'S3cr3tV4l'\napi_key=K3yV4l&user=x",
        ["Kw4rgPwd", "A0d2Cnf", "EnvPa55", "EnvT0ken", "PgEnv", "YamlPa55", "S3cr3tV4l", "K3yV4l"],
    ),
    "XML and escaped JSON": (
        '<user><name>x</name><password>XmlPa55</password></user> {"token": "a\\"b\\"c"}',
        ["XmlPa55", 'a\\"b'],
    ),
    "SQL that creates users": (
        "sqlalchemy.exc.ProgrammingError: (pymysql.err.ProgrammingError) (1064, ...)\n"
        "[SQL: CREATE USER 'dbuser'@'%' IDENTIFIED BY 'SqlUs3rPa55';\n"
        "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('SqlR00t');\n"
        "ALTER USER 'x'@'%' IDENTIFIED WITH mysql_native_password BY 'N4tive']",
        ["SqlUs3rPa55", "SqlR00t", "N4tive"],
    ),
    "AWS credentials in a botocore repr": (
        "Credentials(access_key='AKIAIOSFODNN7EXAMPLE', "
        "secret_key='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', token=None)\n"
        "bare: ASIAJEXAMPLEXEG2JICE wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE22",
        [
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "ASIAJEXAMPLEXEG2JICE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE22",
        ],
    ),
    "private key blocks, whole and cut": (
        "ValueError: Could not deserialize key data:\n-----BEGIN RSA PRIVATE KEY-----\n"
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
        "-----END RSA PRIVATE KEY-----\nand -----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
        ["MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun", "b3BlbnNzaC1rZX"],
    ),
}

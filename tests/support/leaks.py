"""Credentials leaked in real faults, as components report them, and text that holds none."""

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
    "trove guest agent: subprocess with a shell-quoted password": (
        """Traceback (most recent call last):
  File "/opt/stack/trove/trove/guestagent/datastore/mariadb/service.py", line 88, in reset
    subprocess.run(cmd, shell=True, check=True, capture_output=True)
  File "/usr/lib/python3.11/subprocess.py", line 571, in run
    raise CalledProcessError(retcode, process.args,
subprocess.CalledProcessError: Command 'mariadb -u root -p'R00t$hell' -e "ALTER USER \
'root'@'localhost' IDENTIFIED BY 'N3wR00t'"' returned non-zero exit status 1.
""",
        ["R00t$hell", "N3wR00t"],
    ),
    "nova API request body logged as escaped JSON": (
        "2026-05-06 21:30:06.250 DEBUG nova.api.openstack.wsgi [req-5c7e0c3e] Action: 'create', "
        'calling method: create, body: "{\\"server\\": {\\"name\\": \\"db-1\\", '
        '\\"adminPass\\": \\"N0vaAdm1nPa55\\", \\"user_data\\": \\"\\"}}"',
        ["N0vaAdm1nPa55"],
    ),
}

# One spelling a line, short enough to be stored whole in every field (255 characters).
SPELLINGS: dict[str, tuple[str, list[str]]] = {
    "a bearer token outside any header": (
        "keystoneauth1: GET https://trove:8779/v1.0/instances sent Bearer "
        "gAAAAABl3xJ2nQ8vTk1s2Zq and got 401",
        ["gAAAAABl3xJ2nQ8vTk1s2Zq"],
    ),
    "camelCase keys of Nova's API": (
        '{"server": {"name": "db-1", "adminPass": "N0vaAdm1n"}} '
        '{"changePassword": {"adminPass": "Ch4ngeMe"}} {"newPass": "N3wPa55w"}',
        ["N0vaAdm1n", "Ch4ngeMe", "N3wPa55w"],
    ),
    "mysql password in single quotes": (
        "subprocess.CalledProcessError: Command 'mysql -u root -p'Qu0tedR00t' -e \"SELECT 1\"' "
        "returned non-zero exit status 1.",
        ["Qu0tedR00t"],
    ),
    "mysql password in double quotes": (
        "Command 'mysqldump -uroot -p\"Dq8Pa55\" --all-databases' returned non-zero exit status 2.",
        ["Dq8Pa55"],
    ),
    "mysql password quoted inside an argument list": (
        "Command '['mysql', '-uroot', \"-p'L1stPa55'\", '-e', 'SELECT 1']' returned non-zero "
        "exit status 1.",
        ["L1stPa55"],
    ),
    "mysql password glued to -p": (
        "Command: mysql -h 10.0.0.5 -u os_admin -pGlu3dPa55 -e 'SHOW DATABASES'",
        ["Glu3dPa55"],
    ),
    "escaped JSON": (
        'payload: "{\\"password\\": \\"EscJs0nPa55\\", \\"user\\": \\"trove\\"}"',
        ["EscJs0nPa55"],
    ),
    "XML elements, camelCase and CDATA": (
        "<user><name>dbuser</name><password>Xm1Pa55</password></user>"
        "<adminPass>Xm1Adm1n</adminPass><ns:password><![CDATA[Cd4taPa55]]></ns:password>",
        ["Xm1Pa55", "Xm1Adm1n", "Cd4taPa55"],
    ),
    "an XML attribute": (
        '<credentials user="admin" password="Attr1bPa55"/>',
        ["Attr1bPa55"],
    ),
    "tuples, as a list of pairs is printed": (
        "[('username', 'admin'), ('password', 'TuplePa55'), (u'token', u'TupleT0ken')]",
        ["TuplePa55", "TupleT0ken"],
    ),
    "an S3 presigned URL": (
        "https://b.s3.amazonaws.com/db-1.xbstream?X-Amz-Algorithm=AWS4-HMAC-SHA256&"
        "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&"
        "X-Amz-Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
        ["fe5f80f77d5fa3be", "AKIAIOSFODNN7EXAMPLE"],
    ),
    "an S3 query string authenticated URL (signature version 2)": (
        "https://s3.amazonaws.com/b/k?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1700000000&"
        "Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
        ["vjbyPxybdZaNmGa", "AKIAIOSFODNN7EXAMPLE"],
    ),
    "an Azure shared access signature": (
        "https://acct.blob.core.windows.net/c/b?sv=2021-08-06&sr=b&sp=r&"
        "sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D",
        ["Zm9vYmFyYmF6cXV4"],
    ),
    "a Swift temporary URL": (
        "GET /v1/AUTH_x/backups/db-1?temp_url_sig=da39a3ee5e6b4b0d3255bfef95601890afd80709&"
        "temp_url_expires=1700000000",
        ["da39a3ee5e6b4b0d"],
    ),
    "an AWS signature version 4 Authorization header": (
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6",
        ["AKIAIOSFODNN7EXAMPLE", "5d672d79c15b1316"],
    ),
    "keys from oslo.utils' list": (
        "sys_pswd=Sy5Pswd encrypted_key: 'Encr4ptd' fernetkey=Fern3tK3y CHAPPASSWORD=Ch4pPa55 "
        '"configdrive": "H4sICAAAAAAC/0NvbmZpZw" secret_uuid=5a1b2c3d',
        ["Sy5Pswd", "Encr4ptd", "Fern3tK3y", "Ch4pPa55", "H4sICAAAAAAC", "5a1b2c3d"],
    ),
    "more key names of the same kind": (
        "cephxkey = Ceph8Key keyring='Key1ringV' pskey=Psk3yV4l ssl_key=SslK3yV4l "
        "MYSQL_PWD=MyPwd9 db_passwd=Db8Passwd",
        ["Ceph8Key", "Key1ringV", "Psk3yV4l", "SslK3yV4l", "MyPwd9", "Db8Passwd"],
    ),
    "a list of passwords": (
        "trove.guestagent: create_user failed: {'name': 'app', 'passwords': ['L1stA', 'L1stB']}",
        ["L1stA", "L1stB"],
    ),
    "a Trove notification payload": (
        "{'instance_id': 'i-1', 'users': [{'_name': 'app', '_password': u'Us3rPa55'}], "
        "'transport_url': 'rabbit://openstack:R4bbitPa55@ctl:5672//'}",
        ["Us3rPa55", "R4bbitPa55"],
    ),
    "keystone token headers": (
        "X-Auth-Token: gAAAAABk7Yq2 X-Subject-Token: gAAAAABk9Zr4 Cookie: sessionid=4f2b9c1a",
        ["gAAAAABk7Yq2", "gAAAAABk9Zr4", "4f2b9c1a"],
    ),
}


# Text with no credential in it, which must come through unchanged.
INNOCENT = [
    """Traceback (most recent call last):
  File "/opt/stack/trove/trove/taskmanager/models.py", line 482, in _create_server
    server = self.nova_client.servers.create(
  File "/usr/lib/python3/dist-packages/novaclient/v2/servers.py", line 1480, in create
    return self._boot(response_key, *boot_args, **boot_kwargs)
novaclient.exceptions.Forbidden: Quota exceeded for cores: Requested 8, but already used 20 of \
20 cores (HTTP 403) (Request-ID: req-5c7e0c3e-8f1a-4f2b-9d1e-2f6c8b0a1d3e)""",
    "pymysql.err.OperationalError: (1045, \"Access denied for user 'root'@'10.0.0.5' "
    '(using password: YES)")',
    "ERROR 1045 (28000): Access denied for user 'os_admin'@'localhost' (using password: NO)",
    'psycopg2.OperationalError: FATAL:  password authentication failed for user "postgres"',
    "KeyError: 'password'",
    "Command: mysql -h db -P 3306 -u root --port 3306 -e 'SELECT 1'",
    "Command '['mysql', '-u', 'root', '-p', '-e', 'SELECT 1']' returned non-zero exit status 1.",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 of http://controller:8774/v2.1/servers",
    "bypass=1 compass: north passes=3 signal=9 design: ok assignment=2",
    "sort_key=created_at key_name=mykey primary_key=id",
    "Bearer authentication failed: the token has expired",
    "POST https://controller:5000/v3/auth/tokens returned 401",
    "<server><name>db-1</name><status>ERROR</status></server>",
    "A guest error occurred",
    "",
]

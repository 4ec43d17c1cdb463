//! resty.mysql against a real MariaDB, through the edge's content phase: column types, NULL,
//! OK packets, error packets, several result sets, the keep-alive pool, and refusals.

use super::netns::in_private_network;
use super::services::MariaDb;
use super::support::*;
use super::{BASE, MARIADB_INIT, get, quoted};

const SCRIPT: &str = r#"
local mysql = require "resty.mysql"
local function conn(user, password, extra)
    local db = assert(mysql:new())
    db:set_timeout(2000)
    local opts = { host = "127.0.0.1", port = 3306, database = "auth_db",
                   user = user or "user", password = password or "pass", charset = "utf8mb4" }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local ok, err, errcode, sqlstate = db:connect(opts)
    if not ok then return nil, err, errcode, sqlstate end
    return db
end
local function show(v)
    if v == ngx.null then return "null" end
    return type(v) .. " " .. tostring(v)
end

local db = assert(conn())
ngx.say("fresh ", db:get_reused_times(), " ", db:server_ver():find("MariaDB", 1, true) ~= nil)

local res, err = db:query([[CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, tiny TINYINT,
    big BIGINT, f FLOAT, d DOUBLE, dc DECIMAL(10,2), s VARCHAR(20), n INT NULL, dt DATETIME,
    y YEAR, b VARBINARY(4))]])
ngx.say("create ", res.affected_rows, " ", res.insert_id, " ", tostring(err))
res = db:query([[INSERT INTO t (tiny, big, f, d, dc, s, n, dt, y, b) VALUES
    (-5, 1234567890123, 1.5, 2.25, 12.34, 'héllo', NULL, '2024-01-02 03:04:05', 2024, X'00FF')]])
ngx.say("insert ", res.affected_rows, " ", res.insert_id, " ", res.warning_count, " ",
    tostring(res.message))
res = db:query("INSERT INTO t (s) VALUES ('a'), ('b')")
ngx.say("insert2 ", res.affected_rows, " ", res.insert_id, " ", res.message)
-- CLIENT_FOUND_ROWS: a row matched but unchanged still counts.
res = db:query("UPDATE t SET s = 'a' WHERE id = 2")
ngx.say("update ", res.affected_rows, " ", res.message)
res = db:query("DROP TABLE IF EXISTS nope")
ngx.say("warnings ", res.warning_count)

local rows = db:query("SELECT * FROM t ORDER BY id", 3)
ngx.say("rows ", #rows)
for _, k in ipairs{"id", "tiny", "big", "f", "d", "dc", "s", "n", "dt", "y"} do
    ngx.say(k, " ", show(rows[1][k]))
end
ngx.say("b ", (rows[1].b:gsub(".", function(c) return string.format("%02x", c:byte()) end)))
ngx.say("row3 ", rows[3].id, " ", rows[3].s, " ", show(rows[3].tiny))

local tricky = "it's \"q\"\n\r\t\0\\ \26 end"
res = db:query("SELECT " .. ngx.quote_sql_str(tricky) .. " AS s, REPEAT('x', 70000) AS big")
ngx.say("quoted ", res[1].s == tricky, " ", #res[1].big)

db:set_compact_arrays(true)
res = db:query("SELECT 1 AS one, 'two' AS two")
ngx.say("compact ", res[1][1], " ", res[1][2], " ", tostring(res[1].one))
db:set_compact_arrays(false)

local ok, errcode, sqlstate
res, err, errcode, sqlstate = db:query("SELEC 1")
ngx.say("syntax ", tostring(res), " ", errcode, " ", sqlstate, " ",
    err:find("You have an error in your SQL syntax", 1, true) ~= nil)
res, err, errcode, sqlstate = db:query("SELECT * FROM missing")
ngx.say("missing ", tostring(res), " ", errcode, " ", sqlstate, " ", err)
res = db:query("SELECT 1 AS still")
ngx.say("after error ", res[1].still)

res, err = db:query("SELECT 1 AS a; SELECT 'x' AS b, NULL AS c; UPDATE t SET tiny = 7 WHERE id = 1")
ngx.say("multi1 ", res[1].a, " ", err)
res, err = db:read_result()
ngx.say("multi2 ", res[1].b, " ", show(res[1].c), " ", err)
res, err = db:read_result()
ngx.say("multi3 ", res.affected_rows, " ", tostring(err))
res, err = db:read_result()
ngx.say("multi4 ", tostring(res), " ", err)
res, err = db:query("SELECT 1 AS a; SELEC 2")
ngx.say("multi err1 ", res[1].a, " ", err)
res, err, errcode = db:read_result()
ngx.say("multi err2 ", tostring(res), " ", errcode)
ok, err = db:send_query("SELECT 2 AS two")
ngx.say("send ", ok > 0, " ", tostring(err), " ", db:read_result()[1].two)

ngx.say("keepalive ", db:set_keepalive(10000, 10))
local db2 = assert(conn())
ngx.say("reused ", db2:get_reused_times(), " ", db2:query("SELECT COUNT(*) AS n FROM t")[1].n)
db2:send_query("SELECT 1")
ngx.say("busy ", select(2, db2:set_keepalive(10000, 10)))
ngx.say("busy query ", select(2, db2:query("SELECT 1")))
db2:close()
local db3 = assert(conn())
ngx.say("after close ", db3:get_reused_times())
db3:close()

local bad
bad, err, errcode, sqlstate = conn("user", "nope")
ngx.say("denied ", tostring(bad), " ", errcode, " ", sqlstate, " ", err)
bad, err = conn("ed", "pass")
ngx.say("switch ", tostring(bad), " ", err)
bad, err = conn("user", "pass", { port = 3307 })
ngx.say("refused ", tostring(bad), " ", err)
bad, err = conn("user", "pass", { path = "/tmp/mysql.sock" })
ngx.say("unix ", tostring(bad), " ", err)
bad, err = conn("user", "pass", { charset = "klingon" })
ngx.say("charset ", tostring(bad), " ", err)
local small = assert(conn("user", "pass", { max_packet_size = 1024, pool = "small" }))
res, err = small:query("SELECT REPEAT('y', 5000) AS y")
ngx.say("too big ", tostring(res), " ", err)
"#;

const EXPECTED: &str = "fresh 0 true
create 0 0 nil
insert 1 1 0 nil
insert2 2 2 Records: 2  Duplicates: 0  Warnings: 0
update 1 Rows matched: 1  Changed: 0  Warnings: 0
warnings 1
rows 3
id number 1
tiny number -5
big number 1234567890123
f number 1.5
d number 2.25
dc number 12.34
s string héllo
n null
dt string 2024-01-02 03:04:05
y number 2024
b 00ff
row3 3 b null
quoted true 70000
compact 1 two nil
syntax nil 1064 42000 true
missing nil 1146 42S02 Table 'auth_db.missing' doesn't exist
after error 1
multi1 1 again
multi2 x null again
multi3 1 nil
multi4 nil cannot read result in the current context: 1
multi err1 1 again
multi err2 nil 1064
send true nil 2
keepalive 1
reused 1 3
busy cannot be reused in the current connection state: 2
busy query failed to send query: cannot send query in the current context: 2
after close 0
denied nil 1045 28000 Access denied for user 'user'@'127.0.0.1' (using password: YES)
switch nil unsupported authentication plugin: client_ed25519
refused nil failed to connect: connection refused
unix nil failed to connect: unix domain sockets are not supported
charset nil charset 'klingon' is not supported
too big nil packet size too big: 5003
";

#[test]
fn resty_mysql_reads_types_errors_results_and_pools_against_mariadb() {
    in_private_network("resty_mysql", || async {
        let _db = MariaDb::start(3306, MARIADB_INIT).await;
        let yaml = format!(
            r#"
applications:
  - name: site
    is_default: true
    listeners: [{{address: "127.0.0.1:8080"}}]
    lua: {{content: {{inline: {}}}}}
"#,
            quoted(SCRIPT)
        );
        let _edge = edge(&yaml, &[]).await;
        let (status, body, _) = get(&format!("{BASE}/")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, EXPECTED);
    });
}

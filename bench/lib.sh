# Shared setup of the benchmark scripts (sourced, not run): a release build, a temp dir
# removed on exit, free ports, a Wharf config, 20 mirrors served by one nginx.

# bench_start TOOL...: check the tools, build, make $W; sets WHARF and W.
bench_start() {
  for t in "$@"; do command -v "$t" >/dev/null || { echo "install $t (apt-get install $t)" >&2; exit 1; }; done
  cargo build --release -q
  WHARF=$PWD/target/release/wharf
  W=$(mktemp -d); chmod 755 "$W"
  trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
  mkdir -p "$W/up" "$W/data"
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# write_config PORT [EXTRA_TOML]: $W/wharf.toml, upstream oci:$W/up, no schedules, mirrors
# on loopback allowed.
write_config() {
  cat > "$W/wharf.toml" <<TOML
[server]
listen = "127.0.0.1:$1"
trusted_proxies = ["127.0.0.1/32"]
[storage]
data_dir = "$W/data"
[upstream]
url = "oci:$W/up"
[schedule]
sync = "0 0 0 31 2 *"
crawl = "0 0 0 31 2 *"
[crawl]
# The mirrors here are on loopback.
allow_private_addresses = true
${2:-}
TOML
}

wharf_cli() { RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" "$@"; }

# start_mirrors PORT [NGINX_SERVER_BLOCKS]: 20 mirrors in 20 countries (and weights), all
# one nginx on PORT serving the tree, registered with Wharf; extra server blocks may follow.
start_mirrors() {
  local mp=$1
  mkdir -p "$W/mirror" "$W/nginx/logs" "$W/nginx/tmp"
  ln -s "$W/data/tree" "$W/mirror/tree"
  local countries=(DE FR US JP BR GB NL SE PL IT ES CA AU IN ZA KR CN RU MX AR)
  for i in "${!countries[@]}"; do
    ln -s "$W/mirror/tree" "$W/mirror/m$i"
    wharf_cli mirror add --name "m$i" --url "http://127.0.0.1:$mp/m$i/" \
      --country "${countries[$i]}" --bandwidth $(( (i % 5 + 1) * 200 )) >/dev/null
  done
  local user_line=""; [ "$(id -u)" = 0 ] && user_line="user root;"
  cat > "$W/nginx/nginx.conf" <<NGX
$user_line
daemon off; worker_processes 1; pid $W/nginx/nginx.pid; error_log $W/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/tmp/b; proxy_temp_path $W/nginx/tmp/p; fastcgi_temp_path $W/nginx/tmp/f;
  uwsgi_temp_path $W/nginx/tmp/u; scgi_temp_path $W/nginx/tmp/s;
  server { listen 127.0.0.1:$mp; root $W/mirror; }
  ${2:-}
}
NGX
  nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" &
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$mp/" && break; sleep 0.1; done
}

# start_wharf PORT: `wharf serve` in the background (its pid in SERVE), once it answers.
start_wharf() {
  RUST_LOG=warn "$WHARF" --config "$W/wharf.toml" serve &
  SERVE=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null && break; sleep 0.1; done
}

# write_xff_lua FILE: a wrk script that GETs its URL with one X-Forwarded-For per request,
# clients spread over the world.
write_xff_lua() {
  cat > "$1" <<'LUA'
local ips = {"81.2.69.142","2.125.160.216","89.160.20.112","216.160.83.56","175.16.199.0",
             "67.43.156.0","202.196.224.0","111.235.160.0","149.101.100.0","12.81.92.0"}
local i = 0
request = function()
  i = i + 1
  wrk.headers["X-Forwarded-For"] = ips[(i % #ips) + 1]
  return wrk.format("GET", nil)
end
LUA
}

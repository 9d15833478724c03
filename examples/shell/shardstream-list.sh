#!/usr/bin/env bash
# shardstream-list.sh: print every item of a shardstream list, one JSON line
# each, as they arrive (bash, curl, jq).
#
# A starting point for partners that read a list behind a shardstream gateway.
# It asks for NDJSON (one item per line, the last line {"meta":{...}}), follows
# meta.next_cursor to the end of the list, names the shards that failed, retries
# 429 and 503 answers after their Retry-After, and never passes a cut stream off
# as a short list.
#
# Usage:
#   shardstream-list.sh URL [--key KEY] [--max-retries N] [--timeout SECONDS]
#
# URL is a full list URL, e.g. 'http://127.0.0.1:8080/v3/events?sort=starts_at&limit=50'.
# The key may also come from the SHARDSTREAM_KEY environment variable; it is
# sent as "Authorization: Bearer KEY" (through a curl config on stdin, so it
# never shows in the process list).
#
# Items go to stdout exactly as the gateway sent them. Retries, errors (with the
# answer's X-Request-Id, to quote to support) and a summary go to stderr:
#   pages: 5
#   items: 240
#   complete: false
#   failed shard apac: truncated (items_delivered=30, page 1, request id 4f2c...)
#
# Exit codes:
#   0  every page was complete: the whole list, every shard answered
#   1  the gateway could not be reached, or curl/jq failed otherwise
#   2  bad command line (or curl/jq missing)
#   3  some shard failed on some page (meta.complete was false); the failed
#      shards are named on stderr. The cursors keep a failed shard's position,
#      so following them to the end still delivers its items on a later page,
#      but that page's part of the list missed them.
#   4  a response was truncated: curl saw the connection end before the last
#      chunk (curl exit 18, 56, ...) or the last line is not the meta line
#   5  a 429 or 503 answer was still there after --max-retries retries
#   6  an error answer (400, 401, 403, 404, 410, 502, 504, ...): its code and
#      message are printed on stderr

set -u -o pipefail
shopt -s lastpipe  # the page loop below runs in this shell: its variables stay

url="" key="${SHARDSTREAM_KEY:-}" max_retries=5 timeout=60

usage() {
  echo "$1" >&2
  echo "usage: shardstream-list.sh URL [--key KEY] [--max-retries N] [--timeout SECONDS]" >&2
  exit 2
}

while (($#)); do
  case $1 in
    --key) (($# >= 2)) || usage "--key needs a value"; key=$2; shift 2 ;;
    --max-retries) (($# >= 2)) || usage "--max-retries needs a value"; max_retries=$2; shift 2 ;;
    --timeout) (($# >= 2)) || usage "--timeout needs a value"; timeout=$2; shift 2 ;;
    -h|--help) usage "Print every item of a shardstream list." ;;
    -*) usage "unknown option $1" ;;
    *) [[ -z $url ]] || usage "unexpected argument $1"; url=$1; shift ;;
  esac
done
[[ -n $url ]] || usage "a list URL is required"
[[ $url =~ ^https?://[^/]+ ]] || usage "not an http(s) URL: $url"
[[ $max_retries =~ ^[0-9]+$ ]] || usage "--max-retries must be 0 or more"
[[ $timeout =~ ^[0-9]+([.][0-9]+)?$ ]] || usage "--timeout must be a number of seconds"
for tool in curl jq; do
  command -v "$tool" >/dev/null || usage "$tool is required"
done

speed_time=${timeout%.*}
((speed_time > 0)) || speed_time=1
# The key goes into a curl config: quote it for that syntax.
key_quoted=${key//\\/\\\\}
key_quoted=${key_quoted//\"/\\\"}

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
headers=$tmp/headers

err() { printf '%s\n' "$*" >&2; }

# The value of one response header field (the last one), without its CR.
header() {
  local name=$1 line value=""
  while IFS= read -r line; do
    line=${line%$'\r'}
    if [[ ${line,,} == "${name,,}:"* ]]; then
      value=${line#*:}
      value=${value#"${value%%[![:space:]]*}"}
    fi
  done < "$headers"
  printf '%s' "$value"
}

status() {  # the status code of the response in $headers, or nothing
  local first=""
  [[ -s $headers ]] && IFS= read -r first < "$headers"
  first=${first%$'\r'}
  [[ $first =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && printf '%s' "${BASH_REMATCH[1]}"
}

# The list's path without its query: cursor pages take only ?cursor=.
path_url=${url%%\?*}
page=0 printed=0 complete=true failures=()
page_url=$url

while :; do
  page=$((page + 1))
  for ((attempt = 0; ; attempt++)); do
    : > "$headers"
    meta="" held="" status="" body="" items=0 cut=""
    # Every line except the meta line (the last one) is an item and is printed
    # at once; a line that looks like the meta is held until we know whether
    # another line follows it.
    {
      printf 'header = "Accept: application/x-ndjson"\n'
      printf 'header = "User-Agent: shardstream-example-client/1.0 (curl)"\n'
      [[ -n $key ]] && printf 'header = "Authorization: Bearer %s"\n' "$key_quoted"
    } | curl -sS -N --config - -D "$headers" --connect-timeout "$timeout" \
          --speed-limit 1 --speed-time "$speed_time" "$page_url" |
    while IFS= read -r line || { [[ -n $line ]] && cut="the last line has no newline"; }; do
      if [[ -z $status ]]; then  # the first body bytes: the header file is complete
        status=$(status)
      fi
      if [[ $status != 200 ]]; then
        body+=$line$'\n'
        continue
      fi
      [[ -n $cut ]] && break  # a partial line is never an item
      if [[ -n $held ]]; then
        printf '%s\n' "$held"
        items=$((items + 1)) held=""
      fi
      if [[ $line == '{"meta":'* ]]; then
        held=$line
      elif [[ -n $line ]]; then
        printf '%s\n' "$line"
        items=$((items + 1))
      fi
    done
    rc=("${PIPESTATUS[@]}")
    curl_rc=${rc[1]}
    [[ -n $status ]] || status=$(status)
    request_id=$(header x-request-id)
    printed=$((printed + items))

    if [[ $status == 200 ]]; then
      # The meta line: the last line, {"meta":{"shards":...}} and nothing else.
      if [[ -n $held ]] && jq -e 'type == "object" and keys == ["meta"]
                                  and (.meta | type == "object" and has("shards"))' \
                               <<<"$held" >/dev/null 2>&1; then
        meta=$held
      elif [[ -n $held ]]; then
        printf '%s\n' "$held"
        items=$((items + 1)) printed=$((printed + 1))
      fi
      if ((curl_rc != 0)) || [[ -z $meta || -n $cut ]]; then
        why="the stream ended without its meta line"
        ((curl_rc != 0)) && why="curl exit $curl_rc: the connection ended before the last chunk"
        err "error: page $page truncated after $items items: $why (request id $request_id)"
        code=4
        break 2
      fi
      break
    fi

    if [[ -z $status ]]; then
      err "error: cannot get $page_url (curl exit $curl_rc)"
      code=1
      break 2
    fi
    error_code=$(jq -r '.error.code // "null"' <<<"$body" 2>/dev/null) || error_code=null
    message=$(jq -r '.error.message // empty' <<<"$body" 2>/dev/null) || message=""
    [[ -n $error_code ]] || error_code=null
    [[ -n $message ]] || message="HTTP $status"
    if [[ $status != 429 && $status != 503 ]]; then
      err "error: page $page: $status $error_code: $message (request id $request_id)"
      code=6
      break 2
    fi
    if ((attempt >= max_retries)); then
      err "error: page $page: $status $error_code still, after $max_retries retries: $message" \
          "(request id $request_id)"
      code=5
      break 2
    fi
    wait=$(header retry-after)
    [[ $wait =~ ^[0-9]+$ ]] || wait=1  # an HTTP date or nothing: one second
    ((wait > 300)) && wait=300
    err "page $page: $status $error_code, retry $((attempt + 1)) of $max_retries in $wait s" \
        "(request id $request_id)"
    sleep "$wait"  # 503 shards_unavailable: the same request again (the same cursor)
  done

  # This page is whole: name its failed shards, go on with its cursor.
  jq -r '.meta.shards.failed[]? | [.shard, .error, .items_delivered] | map(tostring) | @tsv' \
      <<<"$meta" | while IFS=$'\t' read -r shard error delivered; do
    err "page $page: shard $shard failed: $error (request id $request_id)"
    failures+=("failed shard $shard: $error (items_delivered=$delivered, page $page,"\
" request id $request_id)")
  done
  page_complete=$(jq -r 'if .meta | has("complete") then .meta.complete
                         else (.meta.shards.failed // [] | length == 0) end' <<<"$meta")
  [[ $page_complete == true ]] || complete=false
  cursor=$(jq -r '.meta.next_cursor // empty' <<<"$meta")
  if [[ -z $cursor ]]; then
    code=0
    break
  fi
  page_url="$path_url?cursor=$(jq -rn --arg c "$cursor" '$c | @uri')"
done

pages=$page
((code == 0)) || { pages=$((page - 1)); complete=false; }
err "pages: $pages"
err "items: $printed"
err "complete: $complete"
for line in "${failures[@]}"; do err "$line"; done
((code == 0)) && [[ $complete != true ]] && code=3
exit "$code"

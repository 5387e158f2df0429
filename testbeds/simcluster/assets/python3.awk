# Evaluates the print(...) calls of a one-line Python snippet against a table of known expressions
# ("expression<TAB>value" lines), so a version probe prints what a real image prints. Importing an
# unknown module or printing an unknown expression fails loudly instead of printing a guess.
BEGIN { FS = "\t" }
{ value[$1] = $2; split($1, part, "."); known[part[1]] = 1 }
END {
  known["sys"] = known["os"] = known["json"] = known["importlib"] = known["platform"] = 1
  code = ENVIRON["GX10_CODE"]
  check_imports(code)
  rest = code
  while ((start = index(rest, "print(")) > 0) {
    rest = substr(rest, start + 6)
    depth = 1; arg = ""; line = ""; count = 0
    for (j = 1; j <= length(rest); j++) {
      c = substr(rest, j, 1)
      if (c == "(") depth++
      if (c == ")" && --depth == 0) break
      if (c == "," && depth == 1) { line = line (count++ ? " " : "") value_of(arg); arg = ""; continue }
      arg = arg c
    }
    if (arg ~ /[^ \t]/) line = line (count++ ? " " : "") value_of(arg)
    print line
    rest = substr(rest, j + 1)
  }
  exit failed
}
function trim(s) { gsub(/^[ \t\n]+|[ \t\n]+$/, "", s); return s }
function value_of(expr) {
  expr = trim(expr)
  if (expr ~ /^".*"$/ || expr ~ /^'.*'$/) return substr(expr, 2, length(expr) - 2)
  if (expr in value) return value[expr]
  printf "python3 stand-in: cannot evaluate %s\n", expr > "/dev/stderr"
  failed = 1
  return ""
}
function check_imports(src,    stmts, n, i, s, mods, m, k, mod) {
  n = split(src, stmts, /[;\n]/)
  for (i = 1; i <= n; i++) {
    s = trim(stmts[i])
    if (s ~ /^import /) m = split(substr(s, 8), mods, ",")
    else if (s ~ /^from /) { split(s, mods, " "); mods[1] = mods[2]; m = 1 }
    else continue
    for (k = 1; k <= m; k++) {
      mod = trim(mods[k]); sub(/ .*/, "", mod); sub(/\..*/, "", mod)
      if (!(mod in known)) {
        print "Traceback (most recent call last):" > "/dev/stderr"
        print "  File \"<string>\", line 1, in <module>" > "/dev/stderr"
        printf "ModuleNotFoundError: No module named '%s'\n", mod > "/dev/stderr"
        exit 1
      }
    }
  }
}

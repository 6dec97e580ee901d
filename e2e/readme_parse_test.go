package e2e

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README marks each shell block with an HTML comment on the line
// before it, which GitHub does not show:
//
//	<!-- readme-test -->                 run its commands in order, each to completion
//	<!-- readme-test: background -->     start each command and leave it running
//	<!-- readme-test: file NAME -->      write the block (any language) to NAME
//	<!-- readme-test: not run: REASON --> do not run it, for the reason given
//
// Every ```sh block must carry one, so a new example is either tested or
// says why not. In a block whose lines start with "$ ", those are the
// commands and the lines after each, up to the next, the output it must
// print: in order, each line matching one output line with runs of spaces
// as one and "…" standing for anything. Elsewhere every line that is not a
// comment is a command, and in a background block the comment line after a
// command ("# simulate: …") is a line to wait for. A command whose comment
// begins "# exit N" must exit with N, every other one with 0; a line ending in
// a backslash continues on the next.

// readmeBlock is one fenced block of the README and its marker.
type readmeBlock struct {
	line   int    // line number of the opening fence
	lang   string // sh, yaml…
	marker string // "run", "background", "file", "not run", or "" for none
	arg    string // the file name, or the reason
	body   []string
}

var markerRE = regexp.MustCompile(`^<!-- readme-test(?::\s*(background|file|not run)\s*:?\s*(.*?))?\s*-->$`)

// parseReadme reads the fenced blocks of the markdown file at path.
func parseReadme(path string) ([]readmeBlock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		blocks  []readmeBlock
		cur     *readmeBlock
		pending *readmeBlock // the marker of the previous line
		n       int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		if cur != nil {
			if strings.HasPrefix(line, "```") {
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			cur.body = append(cur.body, line)
			continue
		}
		if m := markerRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			kind := m[1]
			if kind == "" {
				kind = "run"
			}
			pending = &readmeBlock{marker: kind, arg: strings.TrimSpace(m[2])}
			continue
		}
		if strings.HasPrefix(line, "```") {
			b := readmeBlock{line: n, lang: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
			if pending != nil {
				b.marker, b.arg = pending.marker, pending.arg
			}
			cur = &b
		}
		if strings.TrimSpace(line) != "" {
			pending = nil
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%s: the block of line %d is not closed", path, cur.line)
	}
	return blocks, sc.Err()
}

// readmeStep is one command of a block and what it must do.
type readmeStep struct {
	line   int      // where it is in the README
	cmd    string   // for bash -c
	expect []string // lines its output must hold, in order ("…": anything)
	exit   int      // the exit code it must end with
}

var exitRE = regexp.MustCompile(`#\s*exit (\d+)\b`)

// steps splits a block into its commands.
func (b readmeBlock) steps() []readmeStep {
	prompt := false
	for _, l := range b.body {
		prompt = prompt || strings.HasPrefix(l, "$ ")
	}
	var out []readmeStep
	for i := 0; i < len(b.body); i++ {
		l := b.body[i]
		trimmed := strings.TrimSpace(l)
		if prompt && !strings.HasPrefix(l, "$ ") {
			if len(out) > 0 && trimmed != "" {
				out[len(out)-1].expect = append(out[len(out)-1].expect, trimmed)
			}
			continue
		}
		if !prompt && strings.HasPrefix(trimmed, "#") {
			if len(out) > 0 && b.marker == "background" {
				out[len(out)-1].expect = append(out[len(out)-1].expect, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
			}
			continue
		}
		if trimmed == "" {
			continue
		}
		s := readmeStep{line: b.line + 1 + i, cmd: strings.TrimPrefix(l, "$ ")}
		for strings.HasSuffix(strings.TrimSpace(s.cmd), `\`) && i+1 < len(b.body) {
			i++
			s.cmd = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s.cmd), `\`)) + " " + strings.TrimSpace(b.body[i])
		}
		if m := exitRE.FindStringSubmatch(s.cmd); m != nil {
			fmt.Sscan(m[1], &s.exit)
		}
		out = append(out, s)
	}
	return out
}

// expectRE is the pattern an expected output line stands for.
func expectRE(want string) *regexp.Regexp {
	parts := strings.Split(squash(want), "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// squash trims s and makes each run of spaces one space.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

// missingLines returns the first expected line that output does not hold
// after the lines before it matched (in order), or "" when all match.
func missingLines(output string, expect []string) string {
	lines := strings.Split(output, "\n")
	next := 0
	for _, want := range expect {
		re := expectRE(want)
		found := false
		for ; next < len(lines); next++ {
			if re.MatchString(squash(lines[next])) {
				found = true
				next++
				break
			}
		}
		if !found {
			return want
		}
	}
	return ""
}

func TestReadmeParsing(t *testing.T) {
	dir := t.TempDir()
	md := dir + "/x.md"
	writeFile(t, md, "text\n<!-- readme-test -->\n```sh\n$ berth ctl send d --data x   # exit 5: not connected\nberth: send: Unavailable: …\n$ berth a \\\n    --b c\nok\n```\n"+
		"<!-- readme-test: background -->\n```sh\nberth simulate --devices 2   # runs\n# simulate: devices=2 connected=2 …\n```\n"+
		"<!-- readme-test: file policy.yaml -->\n```yaml\na: b\n```\n<!-- readme-test: not run: needs grpcurl -->\n```sh\ngrpcurl x\n```\n```go\nx := 1\n```\n")
	blocks, err := parseReadme(md)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 5 {
		t.Fatalf("%d blocks, want 5: %+v", len(blocks), blocks)
	}
	for i, want := range []struct{ marker, arg string }{{"run", ""}, {"background", ""}, {"file", "policy.yaml"}, {"not run", "needs grpcurl"}, {"", ""}} {
		if blocks[i].marker != want.marker || blocks[i].arg != want.arg {
			t.Errorf("block %d: marker %q %q, want %q %q", i, blocks[i].marker, blocks[i].arg, want.marker, want.arg)
		}
	}
	steps := blocks[0].steps()
	if len(steps) != 2 || steps[0].exit != 5 || len(steps[0].expect) != 1 || steps[1].cmd != "berth a --b c" || steps[1].exit != 0 || len(steps[1].expect) != 1 {
		t.Errorf("steps of the prompt block = %+v", steps)
	}
	bg := blocks[1].steps()
	if len(bg) != 1 || len(bg[0].expect) != 1 || bg[0].expect[0] != "simulate: devices=2 connected=2 …" {
		t.Errorf("steps of the background block = %+v", bg)
	}
	out := "message X delivered\nDEVICE    printer-42\nONLINE  no\n"
	if m := missingLines(out, []string{"message … delivered", "DEVICE printer-42", "ONLINE no"}); m != "" {
		t.Errorf("missingLines of matching output = %q", m)
	}
	if m := missingLines(out, []string{"ONLINE no", "DEVICE printer-42"}); m != "DEVICE printer-42" {
		t.Errorf("missingLines out of order = %q, want DEVICE printer-42", m)
	}
	if m := missingLines(out, []string{"ONLINE yes"}); m != "ONLINE yes" {
		t.Errorf("missingLines of a wrong line = %q", m)
	}
}

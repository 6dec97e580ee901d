package deploy

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cliHelp is what `berth <path> --help` says about one command.
type cliHelp struct {
	// flags maps each flag's long name (local and inherited) to whether it
	// takes a value; shorts maps short names to long ones.
	flags  map[string]bool
	shorts map[string]string
	// subcommands are the names of its child commands.
	subcommands map[string]bool
	// takesArgs: the usage line names positional arguments.
	takesArgs bool
}

// berthCLI runs a built berth binary's --help and remembers the answers.
type berthCLI struct {
	bin   string
	cache map[string]*cliHelp
}

// buildBerth builds cmd/berth into dir.
func buildBerth(t *testing.T, dir string) *berthCLI {
	t.Helper()
	bin := filepath.Join(dir, "berth")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/berth").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ../cmd/berth: %v\n%s", err, out)
	}
	return &berthCLI{bin: bin, cache: map[string]*cliHelp{}}
}

var (
	// flagLine matches a flag in cobra's help: "  -o, --output string   …",
	// "      --insecure   …" (a bool: no value name before the usage).
	flagLine = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9-]*)(?: (\S+))?(?:\s{2,}|$)`)
	// commandLine matches a child command: "  apikey      Create, …" (the
	// longest name is followed by one space only).
	commandLine = regexp.MustCompile(`^\s+([a-z0-9][a-z0-9-]*)\s+\S`)
)

// help returns what `berth path… --help` says.
func (c *berthCLI) help(path []string) (*cliHelp, error) {
	key := strings.Join(path, " ")
	if h, ok := c.cache[key]; ok {
		return h, nil
	}
	out, err := exec.Command(c.bin, append(append([]string{}, path...), "--help")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("berth %s --help: %v\n%s", key, err, out)
	}
	h, err := parseHelp(string(out), path)
	if err != nil {
		return nil, fmt.Errorf("berth %s --help: %w", key, err)
	}
	c.cache[key] = h
	return h, nil
}

// parseHelp reads cobra's help text of the command at path.
func parseHelp(text string, path []string) (*cliHelp, error) {
	h := &cliHelp{flags: map[string]bool{}, shorts: map[string]string{}, subcommands: map[string]bool{}}
	self := strings.TrimSpace("berth " + strings.Join(path, " "))
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && strings.HasSuffix(line, ":") {
			section = strings.TrimSuffix(line, ":")
			continue
		}
		switch section {
		case "Usage":
			u := strings.TrimSpace(line)
			if rest, ok := strings.CutPrefix(u, self); ok && !strings.HasSuffix(u, "[command]") {
				rest = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "[flags]"))
				h.takesArgs = rest != ""
			}
		case "Available Commands", "Additional Commands":
			if m := commandLine.FindStringSubmatch(line); m != nil {
				h.subcommands[m[1]] = true
			}
		case "Flags", "Global Flags":
			if m := flagLine.FindStringSubmatch(line); m != nil {
				h.flags[m[2]] = m[3] != ""
				if m[1] != "" {
					h.shorts[m[1]] = m[2]
				}
			}
		}
	}
	if len(h.flags) == 0 {
		return nil, fmt.Errorf("no flag found in the help text (has its format changed?):\n%s", text)
	}
	return h, nil
}

// invocation is one berth command line found in a deploy file.
type invocation struct {
	where string   // the file and the place in it, for messages
	args  []string // after "berth"
}

// resolved is an invocation checked against the binary.
type resolved struct {
	path  []string          // the subcommand, e.g. [ctl registry group put]
	flags map[string]string // long flag name → value ("true" for a bool without one)
	args  []string          // positional arguments
}

// command returns the subcommand path as one string.
func (r *resolved) command() string { return strings.Join(r.path, " ") }

// resolve finds the subcommand inv names and checks each of its flags and
// arguments against the binary's help.
func (c *berthCLI) resolve(inv invocation) (*resolved, error) {
	r := &resolved{flags: map[string]string{}}
	h, err := c.help(nil)
	if err != nil {
		return nil, err
	}
	type seen struct{ name, value string }
	var flags []seen
	args := inv.args
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			r.args = append(r.args, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, value, hasValue := strings.Cut(a[2:], "=")
			takes, ok := h.flags[name]
			if !ok {
				return nil, fmt.Errorf("berth %s: unknown flag --%s", strings.Join(r.path, " "), name)
			}
			if !hasValue {
				value = "true"
				if takes {
					if i+1 == len(args) {
						return nil, fmt.Errorf("berth %s: flag --%s needs a value", strings.Join(r.path, " "), name)
					}
					i++
					value = args[i]
				}
			}
			flags = append(flags, seen{name, value})
		case strings.HasPrefix(a, "-") && len(a) > 1:
			short, value, hasValue := strings.Cut(a[1:], "=")
			if len(short) > 1 && !hasValue { // -ojson
				short, value, hasValue = short[:1], short[1:], true
			}
			name, ok := h.shorts[short]
			if !ok {
				return nil, fmt.Errorf("berth %s: unknown flag -%s", strings.Join(r.path, " "), short)
			}
			if !hasValue {
				value = "true"
				if h.flags[name] {
					if i+1 == len(args) {
						return nil, fmt.Errorf("berth %s: flag -%s needs a value", strings.Join(r.path, " "), short)
					}
					i++
					value = args[i]
				}
			}
			flags = append(flags, seen{name, value})
		case len(r.args) == 0 && h.subcommands[a]:
			r.path = append(r.path, a)
			if h, err = c.help(r.path); err != nil {
				return nil, err
			}
		default:
			r.args = append(r.args, a)
		}
	}
	// Cobra parses every flag with the final command, which knows its own
	// and its parents' persistent flags (the help's Global Flags).
	for _, f := range flags {
		if _, ok := h.flags[f.name]; !ok {
			return nil, fmt.Errorf("berth %s: flag --%s is not one of this command's", r.command(), f.name)
		}
		r.flags[f.name] = f.value
	}
	switch {
	case len(r.path) == 0:
		return nil, fmt.Errorf("berth %s: no subcommand", strings.Join(inv.args, " "))
	case len(r.args) > 0 && len(h.subcommands) > 0:
		return nil, fmt.Errorf("berth %s: unknown subcommand %q", r.command(), r.args[0])
	case len(r.args) > 0 && !h.takesArgs:
		return nil, fmt.Errorf("berth %s takes no arguments, given %q", r.command(), r.args)
	}
	return r, nil
}

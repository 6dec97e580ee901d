package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// composeFile is the part of deploy/compose.yaml the tests read.
type composeFile struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

// composeService is one service of the compose file. Commands are lists
// (the tests do not split strings as a shell would).
type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
		Target     string `json:"target"`
	} `json:"build"`
	Entrypoint      []string                     `json:"entrypoint"`
	Command         []string                     `json:"command"`
	StopGracePeriod string                       `json:"stop_grace_period"`
	ReadOnly        bool                         `json:"read_only"`
	CapDrop         []string                     `json:"cap_drop"`
	User            string                       `json:"user"`
	DependsOn       map[string]composeDependency `json:"depends_on"`
	Volumes         []string                     `json:"volumes"`
	Profiles        []string                     `json:"profiles"`
	Healthcheck     *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
}

// composeDependency is one entry of a service's depends_on.
type composeDependency struct {
	Condition string `json:"condition"`
}

// readCompose parses deploy/compose.yaml (anchors and merge keys
// included).
func readCompose(t *testing.T) *composeFile {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	return &c
}

// names returns m's keys, sorted.
func names[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// berthImage reports whether a compose service runs the berth image of
// deploy/Dockerfile's default target (the init target runs sh scripts).
func (s composeService) berthImage() bool {
	return strings.HasPrefix(s.Image, "berth:")
}

// berthArgs returns the berth command line a berth-image service runs:
// the image's entrypoint is berth, which entrypoint may override with
// berth and leading arguments.
func (s composeService) berthArgs() ([]string, error) {
	args := append([]string{}, s.Command...)
	if len(s.Entrypoint) > 0 {
		if filepath.Base(s.Entrypoint[0]) != "berth" {
			return nil, fmt.Errorf("entrypoint %q is not berth", s.Entrypoint)
		}
		args = append(append([]string{}, s.Entrypoint[1:]...), args...)
	}
	return args, nil
}

// manifest is one YAML document of deploy/k8s.
type manifest struct {
	file string
	doc  []byte
}

// readManifests returns every document of every deploy/k8s/*.yaml file.
func readManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifest in deploy/k8s (%v)", err)
	}
	var out []manifest
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			out = append(out, manifest{file: f, doc: doc})
		}
	}
	return out
}

// stripComments drops YAML comment lines, to tell an empty document.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") && s != "---" {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// shellInvocations returns the berth command lines of a shell script:
// every simple command (lines joined at a trailing backslash, split at ;
// && || and |) whose first word is berth. Words are split as sh does for
// quotes; variables stay as written.
func shellInvocations(file string) ([]invocation, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return shellTextInvocations(file, string(b))
}

// markdownInvocations returns the berth command lines of a Markdown
// file's ```sh blocks.
func markdownInvocations(file string) ([]invocation, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	// Lines outside the blocks become empty, to keep line numbers.
	lines := strings.Split(string(b), "\n")
	in := false
	for i, l := range lines {
		fence := strings.HasPrefix(strings.TrimSpace(l), "```")
		switch {
		case fence && !in:
			in = strings.TrimSpace(l) == "```sh"
			lines[i] = ""
		case fence:
			in = false
			lines[i] = ""
		case !in:
			lines[i] = ""
		}
	}
	return shellTextInvocations(file, strings.Join(lines, "\n"))
}

// shellTextInvocations is shellInvocations of text read from file.
func shellTextInvocations(file, text string) ([]invocation, error) {
	var out []invocation
	lines := strings.Split(strings.ReplaceAll(text, "\\\n", " "), "\n")
	for n, line := range lines {
		if s := strings.TrimSpace(line); s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		words, err := shellWords(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n+1, err)
		}
		var cmd []string
		flush := func() {
			if len(cmd) > 0 && cmd[0] == "berth" {
				out = append(out, invocation{where: fmt.Sprintf("%s:%d", file, n+1), args: cmd[1:]})
			}
			cmd = nil
		}
		for _, w := range words {
			switch w {
			case ";", "&&", "||", "|", "then", "do", "else":
				flush()
			default:
				cmd = append(cmd, w)
			}
		}
		flush()
	}
	return out, nil
}

// shellWords splits a line into words as sh does for quotes and
// backslashes, and makes ; && || | words of their own. It stops at a
// comment.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	end := func() {
		if inWord {
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			end()
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated '")
			}
			cur.WriteString(line[i+1 : i+1+j])
			inWord, i = true, i+1+j
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, errors.New(`unterminated "`)
			}
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == ';' || c == '|' || c == '&':
			end()
			op := string(c)
			if i+1 < len(line) && line[i+1] == c {
				op += string(c)
				i++
			}
			words = append(words, op)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	end()
	return words, nil
}

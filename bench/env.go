package bench

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strings"
)

// Env describes the machine and runtime a benchmark ran on.
type Env struct {
	// GoVersion is runtime.Version().
	GoVersion string
	// OS and Arch are GOOS and GOARCH.
	OS, Arch string
	// GOMAXPROCS is the runtime's setting during the run.
	GOMAXPROCS int
	// CPUs is runtime.NumCPU().
	CPUs int
	// CPUModel is the processor's name when the system tells it.
	CPUModel string
}

// CurrentEnv describes this process.
func CurrentEnv() Env {
	return Env{
		GoVersion:  runtime.Version(),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUs:       runtime.NumCPU(),
		CPUModel:   cpuModel(),
	}
}

// cpuModel reads the first "model name" of /proc/cpuinfo; "" elsewhere.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

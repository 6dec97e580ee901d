package bench

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
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
	// LoadAvg is the 1-minute load average when the run started (-1 when
	// unknown): other work on the machine skews the timings.
	LoadAvg float64
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
		LoadAvg:    loadAvg(),
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

// loadAvg reads the 1-minute load average of /proc/loadavg; -1 elsewhere.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

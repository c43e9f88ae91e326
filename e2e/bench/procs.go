// Package bench is the benchmark harness behind `make bench`: it starts mockllm, the proxy
// and (when installed) nginx as a baseline, measures them side by side on loopback and
// reports ratios against the baseline of the same run.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process started by the harness.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	log  *os.File
}

// Start runs bin with args, its output going to dir/name.log.
func Start(dir, name, bin string, args []string, env ...string) (*Proc, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &Proc{Name: name, Cmd: cmd, log: logf}, nil
}

// Stop ends the process (SIGTERM, then SIGKILL after 5 s) and its process group.
func (p *Proc) Stop() {
	if p == nil || p.Cmd.Process == nil {
		return
	}
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	p.log.Close()
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// groupPids returns the pids of the process group led by pid (the harness starts every
// process in its own group, so nginx's workers count with their master).
func groupPids(pid int) []int {
	out := []int{pid}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if f := statFields(p); len(f) > 2 && f[2] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the command name: f[0] is the state
// (field 3), f[2] the process group (field 5), f[11] utime (field 14), f[12] stime.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

// CPUSeconds returns the user+system CPU time used so far by the process group led by pid.
func CPUSeconds(pid int) (float64, error) {
	var total float64
	for _, p := range groupPids(pid) {
		f := statFields(p)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		total += (ut + st) / 100 // USER_HZ is 100 on Linux
	}
	return total, nil
}

// Memory returns the current and peak resident set size in bytes of the process group led
// by pid (peaks are summed, an upper bound for a group).
func Memory(pid int) (rss, peak int64, err error) {
	for _, p := range groupPids(pid) {
		r, pk, err := memoryOf(p)
		if err != nil {
			continue
		}
		rss += r
		peak += pk
	}
	return rss, peak, nil
}

func memoryOf(pid int) (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &peak
		default:
			continue
		}
		fs := strings.Fields(line)
		kb, _ := strconv.ParseInt(fs[1], 10, 64)
		*dst = kb * 1024
	}
	return rss, peak, sc.Err()
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitHTTP waits until GET url answers 200.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not ready after %s (last error: %v)", url, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitPOST waits until a POST of body to url answers 200 (a proxy path is really served);
// tlsConf is the client's TLS settings for an https url (nil: defaults).
func WaitPOST(ctx context.Context, url string, tlsConf *tls.Config, body []byte, timeout time.Duration) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not serving after %s (last: %s)", url, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func numCPU() int { return runtime.NumCPU() }

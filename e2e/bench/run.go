package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/llmproxy-go/llmproxy/e2e/pki"
)

// Options control a benchmark run.
type Options struct {
	BinDir   string        // where make build put the binaries
	WorkDir  string        // logs and generated configs
	Duration time.Duration // length of each load step
	Rates    []int         // fixed-rate steps, requests/s
	Conc     int           // closed-loop concurrency
	Idle     []int         // idle stream counts
	Fleet    []int         // simulated proxy counts for propagation
	// Reporters are the simulated proxy counts for the report load; ReportEvery is their
	// report interval and ReportWindow how long the control plane's CPU is measured.
	Reporters    []int
	ReportEvery  time.Duration
	ReportWindow time.Duration
	// Sections selects what runs (SectionProxy, SectionSaturation, SectionFleet,
	// SectionCache); empty runs everything.
	Sections []string
	Log      *slog.Logger
}

// Sections of a run.
const (
	// SectionProxy is sections 1 to 3 and the idle streams: the proxy against nginx.
	SectionProxy = "proxy"
	// SectionFleet is section 4: propagation and reports to and from a simulated fleet.
	SectionFleet = "fleet"
	// SectionSaturation is section 2 alone (part of SectionProxy): closed-loop throughput
	// of the proxy and nginx, in plaintext and terminating TLS.
	SectionSaturation = "saturation"
	// SectionCache is section 5: response cache hits against direct and nginx.
	SectionCache = "cache"
)

// Selected reports whether the run includes section.
func (o Options) Selected(section string) bool {
	return len(o.Sections) == 0 || slices.Contains(o.Sections, section)
}

// Target is one thing under load: direct to the mock, through nginx, through the proxy.
type Target struct {
	Name string
	URL  string
	Proc *Proc       // nil for the mock itself
	TLS  *tls.Config // the client's settings for an https URL; nil for http
}

// Env is the set of running processes.
type Env struct {
	Mock, Proxy, Nginx *Proc
	Spike              *Proc // the fasthttp spike, when built
	MockAddr           string
	Targets            []Target
	// NginxTLS is nginx terminating TLS (the same process, another port), for the
	// saturation section; its Proc is nil without nginx.
	NginxTLS Target
	// Cert is the certificate TLS listeners serve (from a CA made for the run), and
	// ClientTLS the client settings that trust it.
	Cert      pki.Files
	ClientTLS *tls.Config
}

// SpikeBinary is the fasthttp spike (proxy/cmd/llmproxy-spike-fasthttp, built with -tags
// fasthttp by make bench); when it is in the bin directory it is measured as target
// "spike-fasthttp" beside the proxy.
const SpikeBinary = "llmproxy-spike-fasthttp"

// StartEnv starts mockllm, the proxy on a static config and, when installed, nginx and
// the fasthttp spike.
func StartEnv(ctx context.Context, o Options) (*Env, error) {
	e := &Env{}
	var err error
	if e.MockAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	e.Mock, err = Start(o.WorkDir, "mockllm", filepath.Join(o.BinDir, "mockllm"), []string{"--addr", e.MockAddr, "--name", "mock", "--max-records", "0"})
	if err != nil {
		return nil, err
	}
	if err := WaitHTTP(ctx, "http://"+e.MockAddr+"/v1/models", 10*time.Second); err != nil {
		e.Stop()
		return nil, err
	}
	e.Targets = append(e.Targets, Target{Name: "direct", URL: "http://" + e.MockAddr + "/v1/chat/completions"})
	if e.Cert, e.ClientTLS, err = benchCertificate(o.WorkDir); err != nil {
		e.Stop()
		return nil, err
	}

	if nginx, err := exec.LookPath("nginx"); err == nil {
		addr, _ := FreeAddr()
		tlsAddr, _ := FreeAddr()
		conf, err := writeNginxConf(o.WorkDir, addr, tlsAddr, e.MockAddr, e.Cert)
		if err != nil {
			e.Stop()
			return nil, err
		}
		e.Nginx, err = Start(o.WorkDir, "nginx", nginx, []string{"-c", conf, "-p", o.WorkDir})
		if err != nil {
			e.Stop()
			return nil, err
		}
		url := "http://" + addr + "/v1/chat/completions"
		if err := WaitPOST(ctx, url, nil, ChatBody, 10*time.Second); err != nil {
			e.Stop()
			return nil, fmt.Errorf("nginx: %w", err)
		}
		e.Targets = append(e.Targets, Target{Name: "nginx", URL: url, Proc: e.Nginx})
		e.NginxTLS = Target{Name: "nginx-tls", URL: "https://" + tlsAddr + "/v1/chat/completions", Proc: e.Nginx, TLS: e.ClientTLS}
		if err := WaitPOST(ctx, e.NginxTLS.URL, e.ClientTLS, ChatBody, 10*time.Second); err != nil {
			e.Stop()
			return nil, fmt.Errorf("nginx-tls: %w", err)
		}
	} else {
		o.Log.Warn("nginx is not installed: no baseline (apt-get install nginx-light)")
	}

	// The proxy runs with its default flags: the access log on (stderr, here its log file).
	t, err := StartProxy(ctx, o, "proxy", e.MockAddr)
	if err != nil {
		e.Stop()
		return nil, err
	}
	e.Proxy = t.Proc
	e.Targets = append(e.Targets, t)

	if _, err := os.Stat(filepath.Join(o.BinDir, SpikeBinary)); err == nil {
		t, err := StartSpike(ctx, o, e.MockAddr)
		if err != nil {
			e.Stop()
			return nil, err
		}
		e.Spike = t.Proc
		e.Targets = append(e.Targets, t)
	}
	return e, nil
}

// StartSpike starts the fasthttp spike in front of the mock, access log on as the
// proxy's, and waits until it serves.
func StartSpike(ctx context.Context, o Options, mockAddr string) (Target, error) {
	addr, _ := FreeAddr()
	p, err := Start(o.WorkDir, "spike-fasthttp", filepath.Join(o.BinDir, SpikeBinary), []string{"--addr", addr, "--upstream", mockAddr})
	if err != nil {
		return Target{}, err
	}
	url := "http://" + addr + "/v1/chat/completions"
	if err := WaitPOST(ctx, url, nil, ChatBody, 10*time.Second); err != nil {
		p.Stop()
		return Target{}, fmt.Errorf("spike-fasthttp: %w", err)
	}
	return Target{Name: "spike-fasthttp", URL: url, Proc: p}, nil
}

// StartProxy starts llmproxy on a static config (one forward, one group, the mock as its
// one upstream) with the given extra flags and waits until it serves; its log is
// name.log in the work directory.
func StartProxy(ctx context.Context, o Options, name, mockAddr string, flags ...string) (Target, error) {
	t, _, err := startProxy(ctx, o, name, mockAddr, nil, nil, "", flags)
	return t, err
}

// StartTLSProxy is StartProxy with the forward terminating TLS with cert; client trusts it.
func StartTLSProxy(ctx context.Context, o Options, name, mockAddr string, cert pki.Files, client *tls.Config, flags ...string) (Target, error) {
	t, _, err := startProxy(ctx, o, name, mockAddr, &cert, client, "", flags)
	return t, err
}

// startProxy starts a proxy for StartProxy and StartTLSProxy, groupExtra added to its group
// (YAML lines of the group, indented by 4); it also returns the admin base URL.
func startProxy(ctx context.Context, o Options, name, mockAddr string, cert *pki.Files, client *tls.Config, groupExtra string, flags []string) (Target, string, error) {
	paddr, _ := FreeAddr()
	aaddr, _ := FreeAddr()
	cfg := filepath.Join(o.WorkDir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(proxyConfig(paddr, aaddr, mockAddr, cert)+groupExtra), 0o600); err != nil {
		return Target{}, "", err
	}
	p, err := Start(o.WorkDir, name, filepath.Join(o.BinDir, "llmproxy"), append([]string{"--config", cfg}, flags...))
	if err != nil {
		return Target{}, "", err
	}
	url := "http://" + paddr + "/v1/chat/completions"
	if cert != nil {
		url = "https://" + paddr + "/v1/chat/completions"
	}
	if err := WaitPOST(ctx, url, client, ChatBody, 10*time.Second); err != nil {
		p.Stop()
		return Target{}, "", fmt.Errorf("%s: %w", name, err)
	}
	return Target{Name: name, URL: url, Proc: p, TLS: client}, "http://" + aaddr, nil
}

// Stop ends every process the env started.
func (e *Env) Stop() {
	for _, p := range []*Proc{e.Proxy, e.Spike, e.Nginx, e.Mock} {
		p.Stop()
	}
}

// Target returns the named target, or false.
func (e *Env) Target(name string) (Target, bool) {
	for _, t := range e.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// proxyConfig is the proxy's static config: one forward (terminating TLS with cert when
// not nil), one group, one upstream.
func proxyConfig(listen, admin, mock string, cert *pki.Files) string {
	host, port := splitHostPort(listen)
	ahost, aport := splitHostPort(admin)
	tlsBlock := ""
	if cert != nil {
		tlsBlock = fmt.Sprintf("\n      tls: {cert: %q, key: %q}", cert.Cert, cert.Key)
	}
	return fmt.Sprintf(`# generated by the benchmark harness: one forward, one group, one upstream
http_server:
  forwards:
    - name: bench
      address: %s
      port: %s
      default_group: mock%s
  admin:
    address: %s
    port: %s
upstreams:
  - name: mock
    url: http://%s
upstream_groups:
  - name: mock
    upstreams:
      - name: mock
`, host, port, tlsBlock, ahost, aport, mock)
}

func splitHostPort(a string) (string, string) {
	i := strings.LastIndexByte(a, ':')
	return a[:i], a[i+1:]
}

// benchCertificate makes a CA and a certificate for 127.0.0.1 in dir, and the client
// settings that trust it.
func benchCertificate(dir string) (pki.Files, *tls.Config, error) {
	ca, err := pki.NewCA("llmproxy-bench-ca")
	if err != nil {
		return pki.Files{}, nil, err
	}
	f, err := ca.IssueFiles(dir, "bench-tls", "127.0.0.1", "127.0.0.1")
	if err != nil {
		return pki.Files{}, nil, err
	}
	return f, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}, nil
}

// writeNginxConf writes a plain keepalive reverse proxy to the mock, the near-limit
// baseline, listening in plaintext on listen and with TLS (cert) on tlsListen.
func writeNginxConf(dir, listen, tlsListen, mock string, cert pki.Files) (string, error) {
	tmp := filepath.Join(dir, "nginx-tmp")
	if err := os.MkdirAll(tmp, 0o777); err != nil {
		return "", err
	}
	_ = os.Chmod(tmp, 0o777)
	conf := fmt.Sprintf(`# generated by the benchmark harness
worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  upstream mock {
    server %[4]s;
    keepalive 512;
  }
  server {
    listen %[3]s reuseport;
    listen %[5]s ssl reuseport;
    ssl_certificate %[6]s;
    ssl_certificate_key %[7]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }
  }
}
`, dir, tmp, listen, mock, tlsListen, cert.Cert, cert.Key)
	p := filepath.Join(dir, "nginx.conf")
	return p, os.WriteFile(p, []byte(conf), 0o644)
}

// RaiseFileLimit lifts the open-file limit as far as this process may, for the idle-stream
// test (children inherit it). It returns the new soft limit.
func RaiseFileLimit(want uint64) uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Max < want {
		nr := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nr) == nil {
			return want
		}
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
	return r.Cur
}

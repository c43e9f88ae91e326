// Package controlplane_test keeps the import rule between the repository's two halves:
// controlplane/ owns the configuration contract and proxy/ consumes it. Nothing under
// controlplane/ imports proxy/; proxy/ imports, of controlplane/, only the contract
// packages listed here, and those import no other package of controlplane/. The rule holds
// for the packages and everything they import; test files may cross only where listed.
package controlplane_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// contract lists the packages under controlplane/ that proxy/ may import: the configuration
// contract. The rest of controlplane/ is the control plane's own.
var contract = []string{
	"controlplane/configfile", // the YAML file format
	"controlplane/validate",   // the one validation: defaults, ranges, enums, the typed Model
	"controlplane/route",      // route-pattern and model-glob syntax
	"controlplane/redact",     // which values are secret, and how they are hidden
	"controlplane/manifest",   // the xDS wire contract
	"controlplane/reportwire", // the proxy report's wire contract: size bounds, the check
	"controlplane/tlsconfig",  // TLS from PEM files; the node-id rule of client certificates
}

// crossTests are the test files allowed to import across the halves: tests of the xDS wire
// that run both of its ends in one process.
var crossTests = map[string][]string{
	"controlplane/xds": {"proxy/xdsclient"},
	"proxy/xdsclient":  {"controlplane/snapshot"},
}

func TestImportRule(t *testing.T) {
	module := goList(t, "list", "-m", "-f", "{{.Path}}")[0][0] + "/"
	short := func(p string) string { return strings.TrimPrefix(p, module) }
	under := func(p, dir string) bool { return strings.HasPrefix(p, dir+"/") || p == dir }

	// imports: every package of the module the two halves build from, to its imports
	// within the module.
	imports := map[string][]string{}
	for _, f := range goList(t, "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./controlplane/...", "./proxy/...") {
		if !strings.HasPrefix(f[0], module) {
			continue
		}
		var deps []string
		for _, d := range f[1:] {
			if strings.HasPrefix(d, module) {
				deps = append(deps, short(d))
			}
		}
		imports[short(f[0])] = deps
	}
	if len(imports) < 10 || imports["proxy/config"] == nil {
		t.Fatalf("go list found %d packages of the module, proxy/config importing %v: the rule checks nothing", len(imports), imports["proxy/config"])
	}

	// forbidden reports why pkg may not (even indirectly) depend on dep, or "".
	forbidden := func(pkg, dep string) string {
		switch {
		case under(pkg, "controlplane") && under(dep, "proxy"):
			return "nothing under controlplane/ may import proxy/"
		case (under(pkg, "proxy") || slices.Contains(contract, pkg)) && under(dep, "controlplane") && !slices.Contains(contract, dep):
			return fmt.Sprintf("%s is not a contract package (%s)", dep, strings.Join(contract, ", "))
		}
		return ""
	}
	var pkgs []string
	for p := range imports {
		if under(p, "controlplane") || under(p, "proxy") {
			pkgs = append(pkgs, p)
		}
	}
	slices.Sort(pkgs)
	for _, p := range pkgs {
		// Walk p's dependencies breadth first, remembering how each was reached.
		via := map[string]string{p: ""}
		queue := []string{p}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			for _, d := range imports[cur] {
				if _, seen := via[d]; seen {
					continue
				}
				via[d] = cur
				queue = append(queue, d)
				if why := forbidden(p, d); why != "" {
					chain := []string{d}
					for x := cur; x != ""; x = via[x] {
						chain = append(chain, x)
					}
					slices.Reverse(chain)
					t.Errorf("%s depends on %s (%s): %s", p, d, strings.Join(chain, " → "), why)
				}
			}
		}
	}

	for _, f := range goList(t, "list", "-f", "{{.ImportPath}} {{join .TestImports \" \"}} {{join .XTestImports \" \"}}", "./controlplane/...", "./proxy/...") {
		p := short(f[0])
		for _, d := range f[1:] {
			if !strings.HasPrefix(d, module) {
				continue
			}
			d = short(d)
			if why := forbidden(p, d); why != "" && !slices.Contains(crossTests[p], d) {
				t.Errorf("tests of %s import %s: %s", p, d, why)
			}
		}
	}
}

// goList runs the go command in the module root and returns its output lines split into
// fields.
func goList(t *testing.T, args ...string) [][]string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("find the go command: %v", err)
	}
	cmd := exec.Command(goCmd, args...)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var lines [][]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			lines = append(lines, f)
		}
	}
	return lines
}

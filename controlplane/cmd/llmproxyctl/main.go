// Command llmproxyctl is the operator CLI of the LLMProxy control plane. It speaks the admin
// gRPC API. `llmproxyctl help` lists the commands, their flags and the exit codes; every
// command answers --help.
//
// The command tree is built by newRootCommand from one constructor per command, each in a
// file of its own (apply.go, get.go, ...): adding a command is a new file and one line in
// newRootCommand. Write commands share write.go (the -m, --wait, --dry-run and -o flags,
// the call, the answer and its exit code) and output.go (how diffs and the fleet's rollout
// print).
package main

import (
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run is the whole program; it returns the exit code. getenv supplies the defaults of
// --server and --token.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCommand(c, getenv)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	return c.report(cmd, err)
}

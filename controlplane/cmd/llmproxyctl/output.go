package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// outputFormat is the value of an -o flag: one of a command's formats, the first by
// default.
type outputFormat struct {
	value   string
	allowed []string
}

func (o *outputFormat) String() string { return o.value }

func (o *outputFormat) Set(s string) error {
	if !slices.Contains(o.allowed, s) {
		return fmt.Errorf("want %s or %s", strings.Join(o.allowed[:len(o.allowed)-1], ", "), o.allowed[len(o.allowed)-1])
	}
	o.value = s
	return nil
}

func (o *outputFormat) Type() string { return "format" }

// addOutputFlag gives cmd an -o/--output flag taking one of formats, the first by default.
func addOutputFlag(cmd *cobra.Command, formats ...string) *outputFormat {
	o := &outputFormat{value: formats[0], allowed: formats}
	cmd.Flags().VarP(o, "output", "o", "output `format`: "+strings.Join(formats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
	return o
}

// printConfig writes cfg (or part of it) as YAML in the file's schema, which apply takes
// back, or as JSON in the REST API's shape, which PUT /api/v1/config takes.
func (c *cli) printConfig(cfg *configv1.Config, format string) error {
	if format == "json" {
		return c.printJSON(cfg)
	}
	b, err := configfile.Encode(cfg)
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(b)
	return err
}

// printJSON writes m as indented JSON with the REST API's field names.
func (c *cli) printJSON(m proto.Message) error {
	b, err := jsonOf(m)
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(b)
	return err
}

// printYAML writes m as YAML with the REST API's field names and values.
func (c *cli) printYAML(m proto.Message) error {
	b, err := jsonOf(m)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("encode yaml: %w", err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode yaml: %w", err)
	}
	_, err = c.stdout.Write(buf.Bytes())
	return err
}

// jsonOf marshals m with proto field names, indented (protojson's own spacing is
// deliberately unstable, so it is re-indented).
func jsonOf(m proto.Message) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode json: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("encode json: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// blockStyle clears the flow and quoting styles JSON input leaves on a YAML tree, so it
// prints as ordinary block YAML.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/diff"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
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

// printMessage writes m, a call's answer, in format: "json" (printJSON), "yaml"
// (printYAML), else by calling table.
func (c *cli) printMessage(format string, m proto.Message, table func() error) error {
	switch format {
	case "json":
		return c.printJSON(m)
	case "yaml":
		return c.printYAML(m)
	}
	return table()
}

// printYAML writes m as YAML with the REST API's field names and values.
func (c *cli) printYAML(m proto.Message) error {
	b, err := jsonOf(m)
	if err != nil {
		return err
	}
	return c.writeYAML(b)
}

// printValue writes v, a value of ours with snake_case JSON tags, as indented JSON or, for
// format "yaml", as block YAML with the same field names.
func (c *cli) printValue(v any, format string) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	if format == "yaml" {
		return c.writeYAML(b)
	}
	_, err = c.stdout.Write(append(b, '\n'))
	return err
}

// writeYAML writes the JSON document b as block YAML.
func (c *cli) writeYAML(b []byte) error {
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
	_, err := c.stdout.Write(buf.Bytes())
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

// printDiff writes d for people: a header naming the two revisions, then each resource
// that differs ("added upstream/openai", "changed forward/main", "changed http_server")
// with its fields, one a line: "path: old → new" for a change, the value alone for an
// added or removed resource, and "changed (secret)" for a secret whose values are withheld.
func (c *cli) printDiff(d *adminv1.ConfigDiff) {
	to := fmt.Sprintf("revision %d", d.GetRevision())
	if d.GetRevision() == 0 {
		to = "the proposed config"
	}
	from := fmt.Sprintf("revision %d", d.GetBaseRevision())
	if d.GetBaseRevision() == 0 {
		from = "the empty config"
	}
	if len(d.GetResources()) == 0 {
		fmt.Fprintf(c.stdout, "%s → %s: no changes\n", from, to)
		return
	}
	fmt.Fprintf(c.stdout, "%s → %s:\n", from, to)
	for _, r := range d.GetResources() {
		name := r.GetKind()
		if r.GetName() != "" {
			name += "/" + r.GetName()
		}
		fmt.Fprintf(c.stdout, "%s %s\n", r.GetAction(), name)
		for _, f := range r.GetFields() {
			fmt.Fprintf(c.stdout, "    %s: %s\n", f.GetPath(), fieldChange(r.GetAction(), f))
		}
	}
}

// fieldChange is the text of one field of a ResourceDiff whose action is action.
func fieldChange(action string, f *adminv1.FieldDiff) string {
	var s string
	switch {
	case f.GetSecret() && f.Old == nil && f.New == nil:
		return "changed (secret)"
	case action == diff.Added:
		s = valueText(f.GetNew())
	case action == diff.Removed:
		s = valueText(f.GetOld())
	default:
		s = valueText(f.GetOld()) + " → " + valueText(f.GetNew())
	}
	if f.GetSecret() {
		s += " (secret)"
	}
	return s
}

// valueText writes a field's value as compact JSON ("ga", 3, ["a","b"]), or (unset).
func valueText(v *structpb.Value) string {
	if v == nil {
		return "(unset)"
	}
	raw, err := protojson.Marshal(v)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return string(raw)
	}
	return buf.String()
}

// printRollout writes how far a write reached the fleet after waiting at most wait:
// "applied on N of M proxies", then a line per refusal with the node and its reason, and
// the proxies that had not answered.
func (c *cli) printRollout(r *adminv1.Rollout, wait time.Duration) {
	line := fmt.Sprintf("applied on %d of %d proxies", r.GetApplied(), r.GetProxies())
	if r.GetProxies() == 0 {
		line += " (no proxy is connected to this control plane)"
	}
	fmt.Fprintln(c.stdout, line)
	for _, p := range r.GetRefused() {
		reason := strings.ReplaceAll(strings.TrimSpace(p.GetError()), "\n", "\n    ")
		fmt.Fprintf(c.stdout, "refused by %s (revision %d): %s\n", p.GetNodeId(), p.GetRevision(), reason)
	}
	if lagging := r.GetLagging(); len(lagging) > 0 {
		fmt.Fprintf(c.stdout, "not yet applied on %s", strings.Join(lagging, ", "))
		if r.GetTimedOut() {
			fmt.Fprintf(c.stdout, " after waiting %s", wait)
		}
		fmt.Fprintln(c.stdout)
	}
}

// timeText is ts in local time, RFC 3339, or "-" when unset: a table cell.
func timeText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}

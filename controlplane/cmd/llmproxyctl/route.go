package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

func newRouteCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route set|delete ...",
		Short: "Create, repoint or delete one route of a forward",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("route needs an action: set or delete")
			}
			return usagef("route: unknown action %q (want set or delete)", args[0])
		},
	}
	set := &cobra.Command{
		Use:   "set FORWARD PATH GROUP",
		Short: "Point the route PATH of FORWARD at GROUP, creating it if needed",
		Long: `Point the route PATH of FORWARD at GROUP, keeping its other conditions, or append it when the
forward has no such route. Without --expected-revision it writes at the revision it read,
and retries when another write got in between.`,
		Example: `  llmproxyctl route set quickstart /v1/chat/completions alt
  llmproxyctl route set quickstart /v1/chat/completions alt -m "drain main" --wait`,
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeRoute(true),
	}
	setOpts := addWriteFlags(c, set)
	set.RunE = func(cmd *cobra.Command, args []string) error {
		return c.routeSet(setOpts, args[0], args[1], args[2])
	}
	del := &cobra.Command{
		Use:               "delete FORWARD PATH",
		Short:             "Delete the route PATH of FORWARD",
		Example:           `  llmproxyctl route delete quickstart /v1/chat/completions`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeRoute(false),
	}
	delOpts := addWriteFlags(c, del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := send(delOpts, adminv1.AdminServiceClient.DeleteRoute, &adminv1.DeleteRouteRequest{Name: args[0], Id: admin.RouteID(args[1])})
		if err != nil {
			return err
		}
		return c.finishWrite(delOpts, resp, fmt.Sprintf("route %q of forward %q deleted (revision %d)", args[1], args[0], resp.GetRevision()))
	}
	cmd.AddCommand(set, del)
	return cmd
}

// routeSet points the route PATH of FORWARD at GROUP, keeping its other conditions, or
// appends it when there is none. Without --expected-revision it reads the route and writes
// it at the revision it read, retrying when another write got in between.
func (c *cli) routeSet(w *writeOptions, forward, path, group string) error {
	client, ctx, done, err := w.connect()
	if err != nil {
		return err
	}
	defer done()
	id := admin.RouteID(path)
	for attempt := 0; ; attempt++ {
		var hdr metadata.MD
		entry, err := client.GetRoute(ctx, &adminv1.GetRouteRequest{Name: forward, Id: id}, grpc.Header(&hdr))
		expected := c.expected.ptr()
		if expected == nil {
			if vals := hdr.Get(admin.RevisionHeader); len(vals) > 0 {
				if v, perr := strconv.ParseUint(vals[0], 10, 64); perr == nil {
					expected = &v
				}
			}
		}
		var resp *adminv1.RouteResponse
		verb := "updated"
		switch {
		case missing(err).GetResourceType() == admin.ResourceRoute:
			verb = "created"
			req := &adminv1.CreateRouteRequest{Name: forward, Route: &configv1.Route{Path: path, TargetGroup: group}}
			if err = w.fill(req); err != nil {
				return err
			}
			req.ExpectedRevision = expected
			resp, err = client.CreateRoute(ctx, req)
		case err != nil:
			return err
		default:
			r := entry.GetRoute()
			r.TargetGroup = group
			req := &adminv1.UpdateRouteRequest{Name: forward, Id: id, Route: r}
			if err = w.fill(req); err != nil {
				return err
			}
			req.ExpectedRevision = expected
			resp, err = client.UpdateRoute(ctx, req)
		}
		if status.Code(err) == codes.Aborted && !c.expected.set && attempt < 4 {
			continue
		}
		if err != nil {
			return err
		}
		return c.finishWrite(w, resp, fmt.Sprintf("route %q of forward %q %s: target_group %q (revision %d)", path, forward, verb, group, resp.GetRevision()))
	}
}

// completeRoute completes FORWARD PATH [GROUP] from the control plane.
func (c *cli) completeRoute(withGroup bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var list func(context.Context, adminv1.AdminServiceClient) ([]string, error)
		switch {
		case len(args) == 0:
			list = func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
				resp, err := client.ListForwards(ctx, &adminv1.ListForwardsRequest{})
				return namesOf(resp.GetForwards()), err
			}
		case len(args) == 1:
			list = func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
				resp, err := client.ListRoutes(ctx, &adminv1.ListRoutesRequest{Name: args[0]})
				var paths []string
				for _, r := range resp.GetRoutes() {
					paths = append(paths, r.GetRoute().GetPath())
				}
				return paths, err
			}
		case len(args) == 2 && withGroup:
			list = func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
				resp, err := client.ListUpstreamGroups(ctx, &adminv1.ListUpstreamGroupsRequest{})
				return namesOf(resp.GetUpstreamGroups()), err
			}
		default:
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return c.completeFromServer(list, toComplete)
	}
}

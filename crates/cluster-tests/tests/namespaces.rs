//! The namespace variant: every node in a network namespace of its own (as on its own
//! machine), regions joined over links with `tc netem` delay where the kernel has it. What
//! loopback cannot show: every edge serves the same listener address at its own address, a
//! client following the GSLB answer reaches each of them, and a port taken on one host makes
//! that edge alone refuse a release while the other applies it.
//!
//! Needs root (and iproute2); skipped with the reason printed otherwise.

use std::time::Duration;

use outpost_cluster_tests::{config, netns};

const PROPAGATION: Duration = Duration::from_secs(30);
const BETWEEN_REGIONS: Duration = Duration::from_millis(40);

#[test]
fn in_namespaces_each_edge_serves_at_its_own_address_and_only_the_host_with_the_port_taken_refuses()
{
    netns::run_scenario(Some(BETWEEN_REGIONS), |mut c| async move {
        let leader = c
            .start_control_plane_in(&["eu-west", "us-east", "ap-south"])
            .await;
        let followers: Vec<u64> = c.cp_ids().into_iter().filter(|id| *id != leader).collect();
        let site = c.site_listen();
        let blue = c.start_origin("blue").await;
        let api = c.api().clone();
        let via = c.cp(leader).api_url();
        api.put_object(&via, "upstreams", "origin", &config::upstream(&[blue]))
            .await;
        api.put_object(
            &via,
            "applications",
            "site",
            &config::proxy_app(site, "origin"),
        )
        .await;
        let v1 = api.release(&via, "blue").await;

        let eu = c.start_edge("edge-eu", "eu-west", &[followers[0]]).await;
        let us = c.start_edge("edge-us", "us-east", &[followers[1]]).await;
        for e in [eu, us] {
            c.wait_edge_serves(e, "/", "blue", PROPAGATION).await;
            let r = c.edge_get(e, "/").await.unwrap();
            assert_eq!(r.pid, c.edge(e).pid(), "{} answered itself", c.edge(e).name);
        }

        // A client following DNS reaches every edge at the address the GSLB answers.
        let gslb = c.start_gslb("cdn.test").await;
        c.wait_gslb_answers(gslb, &[eu, us], PROPAGATION).await;
        let http = outpost_cluster_tests::api::http_client(Duration::from_secs(5));
        for ip in c.gslb_edges(gslb).await.unwrap() {
            let url = format!("http://{ip}:{}/", site.port());
            let body = http.get(&url).send().await.unwrap().text().await.unwrap();
            assert_eq!(body, "blue", "{url}");
        }

        // Port 8081 is taken on edge-eu's host only. Release 2 moves the site to a Lua answer
        // and adds an application on 8081: edge-eu refuses it, edge-us applies it.
        let _held = c.occupy_on_edge(eu, 8081);
        api.put_object(
            &via,
            "applications",
            "site",
            &config::respond_app(site, "v2"),
        )
        .await;
        let other = config::respond_app_for(
            "other.test",
            std::net::SocketAddr::from(([0, 0, 0, 0], 8081)),
            "other",
        );
        api.put_object(&via, "applications", "other", &other).await;
        let v2 = api.release(&via, "port 8081").await;
        c.wait_edge_serves(us, "/", "v2", PROPAGATION).await;
        c.wait_api_shows_applied(&[us], v2).await;
        let name = c.edge(eu).name.clone();
        let refused = outpost_cluster_tests::wait::wait_until(
            "the API shows edge-eu refused version 2",
            PROPAGATION,
            || {
                let (api, via, name) = (api.clone(), via.clone(), name.clone());
                async move {
                    let nodes = api.nodes(&via).await?;
                    let n = nodes.into_iter().find(|n| n["id"] == name.as_str())?;
                    (n["rejectedVersion"] == v2).then_some(n)
                }
            },
        )
        .await;
        eprintln!("edge-eu refused version {v2}: {}", refused["lastError"]);
        assert!(
            refused["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("8081")),
            "{refused}"
        );
        assert_eq!(refused["appliedVersion"], v1, "{refused}");
        c.wait_edge_serves(eu, "/", "blue", PROPAGATION).await;
        assert_eq!(c.edge_version(eu).await, Some(v1));
    });
}

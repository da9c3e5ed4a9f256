//! A tiny in-process DNS server for tests (UDP on 127.0.0.1): answers A queries from a fixed
//! table, NXDOMAIN for every other name, and counts the questions it was asked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata};

/// A running responder; stopped when dropped.
#[derive(Debug)]
pub struct TestDns {
    pub addr: SocketAddr,
    questions: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    /// `evil.test` → 169.254.169.254, `ok.test` → 127.0.0.1, `mixed.test` → both, plus `extra`.
    pub async fn start(extra: &[(&str, IpAddr)]) -> TestDns {
        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let defaults = [
            ("evil.test", "169.254.169.254"),
            ("ok.test", "127.0.0.1"),
            ("mixed.test", "169.254.169.254"),
            ("mixed.test", "127.0.0.1"),
        ];
        for (name, ip) in defaults {
            table
                .entry(name.into())
                .or_default()
                .push(ip.parse().unwrap());
        }
        for (name, ip) in extra {
            table.entry((*name).into()).or_default().push(*ip);
        }
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let questions = Arc::new(AtomicUsize::new(0));
        let counter = questions.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = answer(&table, &query);
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        TestDns {
            addr,
            questions,
            task,
        }
    }

    /// DNS questions received so far (A and AAAA count separately).
    pub fn questions(&self) -> usize {
        self.questions.load(Ordering::SeqCst)
    }
}

fn answer(table: &HashMap<String, Vec<IpAddr>>, query: &Message) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_queries(query.queries.clone());
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let Some(ips) = table.get(&name) else {
        reply.metadata.response_code = ResponseCode::NXDomain;
        return reply;
    };
    for ip in ips {
        let rdata = match (ip, q.query_type()) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(rdata::A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(rdata::AAAA(*v6)),
            _ => continue,
        };
        // TTL 0: every resolution asks again (tests count the questions).
        reply.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
    }
    reply
}

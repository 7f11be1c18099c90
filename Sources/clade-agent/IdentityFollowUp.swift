/// The part of taking on a new identity that may follow its answer: rewriting `/etc/hosts` for
/// the new hostname, then letting the processes frozen for the snapshot run.
///
/// Under emulation the rewrite is the slowest step of a fork's first round trip (the restored
/// guest runs the filesystem's write path for the first time, ~45 ms of the ~210 ms), and the
/// host only needs to know the guest's seed, clock, name and address are its own. So the answer
/// goes first, and every later request that could see the file or the thawed processes (all but
/// `ping` and `identity`) waits until the follow-up is done: a fork's first command still finds
/// its hostname in `/etc/hosts`, and a frozen process still wakes only under the new identity.
enum IdentityFollowUp {
    /// Follow-ups started and not yet finished.
    private static let pending = Guarded(0)
    /// One follow-up at a time: two identities in a row rewrite the file in their order.
    private static let serial = Guarded(())

    /// Sends the identity's answer (`answer`), then does the follow-up of an identity that set the
    /// hostname (`rewriteHosts`) or not, on the calling thread. It is counted as pending before
    /// the answer leaves, so a request the host sends on hearing it already waits. Running it
    /// here rather than on a thread of its own spares a restored guest a thread's first creation
    /// and exit, which under emulation is translated code like any other (~3,000 blocks).
    static func run(rewriteHosts: Bool, answer: () -> Void) {
        pending.withLock { $0 += 1 }
        answer()
        serial.withLock { _ in
            if rewriteHosts, let problem = HostsFile.update() { log("after a new identity: \(problem)") }
            UserFreezer.thaw()
        }
        pending.withLock { $0 -= 1 }
    }

    /// Returns once no follow-up is running.
    static func waitUntilDone() {
        pending.wait { $0 == 0 ? () : nil }
    }
}

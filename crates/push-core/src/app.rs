//! The only place that wires components together: outbox, delivery loop and HTTP server.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, AppState},
    clock::{Clock, SystemClock},
    config::{Service, Settings},
    delivery::health::Board,
    delivery::{Dispatcher, Wiring},
    intake::Intake,
    reload::{Loader, Reloader},
    slots::Slots,
    subscribers::{Roster, Routes},
    telemetry::metrics as m,
};

/// Everything a program's `main` does after parsing flags: load the configuration (from
/// `config_path`, or the defaults), start logging, build, and run until SIGINT/SIGTERM.
pub async fn run_program(service: Service, config_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let settings = crate::config::load(config_path)?;
    let _logs = crate::telemetry::init(service.program(), &settings.log)?;
    match crate::server::raise_open_files_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let shutdown = crate::shutdown::signal_token();
    let path = config_path.map(std::path::Path::to_path_buf);
    let app = Application::build(settings, service)
        .await?
        .reload_with(Arc::new(move || crate::config::load(path.as_deref())));
    crate::shutdown::on_hangup(app.reloader(), shutdown.clone());
    app.run_until_stopped(shutdown).await
}

/// A built program, bound to its port, ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    dispatcher: Dispatcher,
    writer: JoinHandle<()>,
    /// The sources' HTTP routes and background tasks.
    sources: crate::sources::Started,
    /// The retention job's policy and clock (it starts with the server).
    retention: (crate::outbox::RetentionPolicy, Arc<dyn Clock>),
    /// Cancelled when the program stops taking events (the intake then refuses them).
    stopping: CancellationToken,
}

impl Application {
    /// Builds `service` from `settings`, binding the configured listen address.
    pub async fn build(settings: Settings, service: Service) -> anyhow::Result<Self> {
        // A second program on the same configuration would fail on the port first: make the
        // refusal name what is shared, the database (`build_with` takes the lock for good).
        crate::outbox::ensure_not_in_use(&settings.service(service).database)?;
        let listen = settings.service(service).listen.clone();
        let listener = TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
        Self::build_with(settings, service, listener, Arc::new(SystemClock)).await
    }

    /// Builds with an injected listener and clock (tests, tools).
    pub async fn build_with(
        settings: Settings,
        service: Service,
        listener: TcpListener,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let metrics = m::handle();
        let section = settings.service(service);
        let routes = Routes::new(&settings.subscribers, service);
        let d = &settings.delivery;
        let slots = Arc::new(Slots::new(
            crate::delivery::claim_capacity(d.max_in_flight),
            crate::delivery::claim_capacity(d.max_in_flight_per_subscriber),
            routes.all().iter().map(|r| r.id.as_str()),
        ));
        // CDRs are never superseded (issue 14): only status-pusher reads `supersede`.
        let supersede = section.supersede && service == Service::Status;
        let wake = Arc::new(Notify::new());
        let replica = crate::outbox::Replica { wake: Some(wake.clone()), ..crate::outbox::Replica::from_env(d.lease) };
        let opened = crate::outbox::open_replica(&section.database, service, slots.clone(), replica, supersede).await?;
        let (outbox, handed, writer) = (opened.store, opened.handed, opened.task);
        count_queues(&routes, outbox.as_ref()).await?;
        let (board, control) = Board::new();
        let wiring = Wiring {
            routes: routes.clone(),
            outbox: outbox.clone(),
            wake: wake.clone(),
            clock: clock.clone(),
            slots,
            handed,
            board: board.clone(),
            control,
            paused: outbox.paused().await?,
        };
        let dispatcher = Dispatcher::new(&settings, wiring)?;
        let routes = Roster::new(routes);
        let stopping = CancellationToken::new();
        let intake = Intake::new(routes.clone(), outbox.clone(), wake, clock.clone(), stopping.clone());
        let retention = (crate::outbox::RetentionPolicy::from_settings(&settings.outbox), clock.clone());
        let fixed = settings.clone();
        let load: Loader = Arc::new(move || Ok(fixed.clone()));
        let reloader =
            Arc::new(Reloader::new(service, settings.clone(), load, routes.clone(), board.clone(), outbox.clone()));
        let settings = Arc::new(settings);
        let registry = crate::sources::Sources::new(clock.clone());
        let context = crate::sources::Context {
            settings: settings.clone(),
            service,
            intake: intake.clone(),
            sources: registry.clone(),
            shutdown: stopping.clone(),
        };
        let sources = crate::sources::start(&context).await?;
        let state =
            AppState { service, settings, routes, outbox, intake, sources: registry, clock, metrics, board, reloader };
        Ok(Application { listener, state, dispatcher, writer, sources, retention, stopping })
    }

    /// Makes reloads read the configuration with `load` (by default they find the one the
    /// program was built with, so a reload changes nothing).
    pub fn reload_with(mut self, load: Loader) -> Self {
        let state = &self.state;
        self.state.reloader = Arc::new(Reloader::new(
            state.service,
            (*state.settings).clone(),
            load,
            state.routes.clone(),
            state.board.clone(),
            state.outbox.clone(),
        ));
        self
    }

    /// The program's reload (for SIGHUP).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.state.reloader.clone()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled; then stops intake, lets in-flight attempts finish
    /// within the grace period, and closes the outbox.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { listener, state, dispatcher, writer, sources, retention, stopping } = self;
        let program = state.service.program();
        let addr = listener.local_addr()?;
        let tls = state.settings.service(state.service).tls.clone();
        let mut limits = state.settings.server.clone();
        if limits.max_connections == 0 {
            limits.max_connections = crate::server::auto_connection_cap(state.settings.delivery.max_in_flight);
        }
        tracing::debug!(max_connections = limits.max_connections, "connection cap");
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, "{program} listening on {scheme}://{addr}");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            stopping.cancel();
        });
        let outbox = state.outbox.clone();
        let purging = crate::retention::spawn(outbox.clone(), retention.0, retention.1, shutdown.clone());
        let delivery = tokio::spawn(dispatcher.run(shutdown.clone()));
        let router = api::router(state, sources.router);
        crate::server::serve(listener, router, tls, limits, shutdown).await?;
        for task in sources.tasks {
            task.await.context("a source panicked")?;
        }
        delivery.await.context("delivery loop panicked")?;
        purging.await.context("retention job panicked")?;
        outbox.close().await;
        drop(outbox);
        writer.await.context("outbox writer panicked")?;
        tracing::info!("{program} stopped");
        Ok(())
    }
}

/// Sets the queue-depth gauges from the outbox, and names each subscriber that has pending
/// deliveries but is no longer configured (they are kept and shown, never attempted).
async fn count_queues(routes: &Routes, outbox: &dyn crate::outbox::Store) -> anyhow::Result<()> {
    for route in routes.all() {
        route.metrics.queue_depth.set(0.0);
    }
    for (sub, depth) in outbox.pending_counts().await? {
        match routes.get(&sub) {
            Some(route) => route.metrics.queue_depth.increment(depth as f64),
            None => tracing::warn!(subscriber = %sub, pending = depth,
                "subscriber no longer configured: its pending deliveries are kept and not attempted; \
                 POST /v1/subscribers/{sub}/drop or /move to settle them"),
        }
    }
    Ok(())
}

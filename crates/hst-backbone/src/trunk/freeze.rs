//! Setting `require_grad` on every parameter of a module (running statistics stay gradient-free).

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;

/// A [`ModuleMapper`] setting `require_grad` on every float parameter, except BatchNorm's
/// `running_mean`/`running_var`, which never require gradients.
struct RequireGrad {
    require_grad: bool,
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let running_statistic = matches!(
            self.path.last().map(String::as_str),
            Some("running_mean" | "running_var")
        );
        param.set_require_grad(self.require_grad && !running_statistic)
    }
}

/// `module` with every parameter trainable (`true`) or frozen (`false`).
///
/// On a backend without autodiff nothing can require gradients, so only `false` has an effect
/// there; apply it on the autodiff backend you train with.
pub(crate) fn set_trainable<B: Backend, M: Module<B>>(module: M, trainable: bool) -> M {
    module.map(&mut RequireGrad {
        require_grad: trainable,
        path: Vec::new(),
    })
}

-- biconnector.form: the C form codec with PHP bracket notation (src/form.c).
return require("biconnector.core").form
